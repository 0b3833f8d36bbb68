"""--guided-groups through fairseq-train: per-group values logged and plotted, a bitwise
resume after SIGKILL, a refused resume with another grouping, flat --fp16, train-batch
guidance with --guidance-interval, and 2-process DDP against one process."""
import json
import math
import sys

import torch
from fairseq import metrics

import fairseq_guided  # noqa: F401 (safe globals for torch.load of fairseq checkpoints)
from conftest import REPO, json_logs, kill_at_update, run, train_cmd
from fairseq_guided.guidance.passes import token_mean_nll
from test_guidance_fast_path import build, guidance_grads
from guided_recipes.report import plots
from test_distributed import (  # noqa: F401 (the corpus fixture)
    FLAGS as DDP_FLAGS, corpus_with_two_guide_batches, matches_one_process, two_workers,
)

GROUPS = ("embed", "encoder", "decoder")
KEYS = [f"{kind}_{name}/{group}" for kind in ("guided", "hgrad") for name in ("alpha", "beta1")
        for group in GROUPS]
FLAGS = ["--optimizer", "guided_lamb", "--lr", "0.01", "--guided-hparams", "alpha,beta1",
         "--guided-meta-lr", "0.01", "--guided-groups", "embed,encoder,decoder",
         "--guidance-refresh", "step", "--guidance-batch-size", "16"]


def test_groups_resume_bitwise_after_sigkill_and_plot_one_line_per_group(tiny_corpus, tmp_path):
    # 16 sentences a batch: the 30 updates stay inside epoch 1 (see test_production)
    flags = [*FLAGS, "--max-update", "30", "--save-interval-updates", "10"]
    straight = run(train_cmd(tiny_corpus, tmp_path / "straight", *flags, batching=("--batch-size", "16")))
    assert straight.returncode == 0, straight.stdout[-3000:]
    assert "--guided-groups 'embed,encoder,decoder': group encoder:" in straight.stdout
    assert "match no group" not in straight.stdout  # shared embeddings: nothing left over
    rows = json_logs(straight.stdout)
    assert len(rows) == 30 and all(k in rows[-1] for k in KEYS), sorted(rows[-1])
    assert "guided_alpha" not in rows[-1]  # no global value besides the groups'
    last = rows[-1]
    alphas = [float(last[f"guided_alpha/{g}"]) for g in GROUPS]
    assert len(set(alphas)) == 3 and all(abs(a - 1.0) > 1e-3 for a in alphas), alphas
    for row in rows:  # each group's effective lr is its own alpha x the scheduled lr
        for g in GROUPS:
            assert math.isclose(float(row[f"eff_lr/{g}"]), float(row[f"guided_alpha/{g}"]) * float(row["lr"]),
                                rel_tol=1e-3)

    cmd = train_cmd(tiny_corpus, tmp_path / "killed", *flags, batching=("--batch-size", "16"))
    killed_at = kill_at_update(cmd, 15)
    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    resumed_rows = json_logs(resumed.stdout)
    assert 1 < int(resumed_rows[0]["num_updates"]) <= killed_at
    expected = {int(r["num_updates"]): r for r in rows}
    for row in resumed_rows:
        ref = expected[int(row["num_updates"])]
        for key in ("loss", "guide_loss", *KEYS):
            assert row[key] == ref[key], (row["num_updates"], key, row[key], ref[key])
    states = [torch.load(tmp_path / d / "checkpoint_last.pt", weights_only=True)["last_optimizer_state"]
              for d in ("straight", "killed")]
    assert states[0]["guided_hyper"]["groups"] == list(GROUPS)
    assert states[0]["guided_hyper"]["raw"].shape == (3, 2)
    for key in ("raw", "exp_avg", "exp_avg_sq", "steps"):
        assert torch.equal(states[0]["guided_hyper"][key], states[1]["guided_hyper"][key]), key
    assert states[0]["guided_grouping"]["assignment"]["encoder.embed_tokens.weight"] == "embed"

    other = run(train_cmd(tiny_corpus, tmp_path / "killed", *FLAGS, "--max-update", "32",
                          "--guided-groups", "layer", batching=("--batch-size", "16")))
    assert other.returncode != 0 and "num_updates" not in other.stdout
    assert "the checkpoint was trained with --guided-groups 'embed,encoder,decoder'" in other.stdout
    assert "this run has --guided-groups 'layer'" in other.stdout, other.stdout[-2000:]

    # plot_schedules draws one line per group from the run's log
    run_dir = tmp_path / "runs" / "alpha+beta1-seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text(straight.stdout)
    (run_dir / "run.json").write_text(json.dumps({"variant": "alpha+beta1", "seed": 1}))
    plots.plot(tmp_path / "runs", tmp_path / "report")
    assert (tmp_path / "report" / "alpha.png").stat().st_size > 0
    lines = (tmp_path / "report" / "curves.csv").read_text().splitlines()
    labels = {line.split(",")[1] for line in lines[1:] if line.startswith("alpha.png")}
    assert labels == {f"alpha+beta1 seed 1: {g}" for g in GROUPS}


def test_bad_groups_are_refused_before_training(tiny_corpus, tmp_path):
    out = run(train_cmd(tiny_corpus, tmp_path, *FLAGS, "--max-update", "2", "--guided-groups", "enc=(",
                        batching=("--batch-size", "16")))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert "--guided-groups: group 'enc': bad regular expression" in out.stdout, out.stdout[-2000:]


def test_flat_fp16_adam_groups_match_per_tensor_masters(tiny_corpus, tmp_path):
    """Per-group values make flat --fp16 Adam step views of the buffer: the same numbers
    as --fp16-no-flatten-grads."""
    launch = [sys.executable, REPO / "tests" / "launchers" / "cpu_as_cuda.py", "fairseq-train"]
    logs = []
    for name, extra in (("flat", []), ("per_tensor", ["--fp16-no-flatten-grads"])):
        cmd = train_cmd(tiny_corpus, tmp_path / name, "--optimizer", "guided_adam", "--lr", "0.005",
                        "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0.01", "--max-update", "5",
                        "--guided-groups", "layer", "--fp16", *extra)
        out = run(launch + cmd[1:])
        assert out.returncode == 0, out.stdout[-3000:]
        logs.append(json_logs(out.stdout))
    groups = [k.split("/", 1)[1] for k in logs[0][-1] if k.startswith("guided_alpha/")]
    assert {"embed", "encoder.layers.0", "decoder.layers.0"} <= set(groups), groups
    for a, b in zip(*logs):
        for g in groups:
            for key in (f"guided_alpha/{g}", f"hgrad_beta1/{g}"):
                x, y = float(a[key]), float(b[key])
                assert math.isfinite(x) and math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7), (key, x, y)
    assert float(logs[0][-1]["guided_alpha/encoder.layers.0"]) != 1.0


def test_train_batch_guidance_with_an_interval_moves_each_group(tiny_corpus, tmp_path):
    out = run(train_cmd(tiny_corpus, tmp_path, "--optimizer", "guided_adam", "--lr", "0.005",
                        "--guided-hparams", "alpha", "--guided-meta-lr", "0.01", "--max-update", "9",
                        # the regex form, through fairseq's conversion of flags to its config
                        "--guided-groups", r"embed=embed_;encoder=^encoder\.;decoder=^decoder\.",
                        "--guidance-source", "train",
                        "--guidance-interval", "4"))
    assert out.returncode == 0, out.stdout[-3000:]
    rows = json_logs(out.stdout)
    assert "guide_loss" not in rows[-1]
    for g in GROUPS:
        alphas = [float(r[f"guided_alpha/{g}"]) for r in rows]
        # meta steps at update_num 4 and 8 (none at 0: nothing to differentiate yet)
        assert [i for i in range(1, len(alphas)) if alphas[i] != alphas[i - 1]] == [4, 8], (g, alphas)
    assert len({float(rows[-1][f"guided_alpha/{g}"]) for g in GROUPS}) == 3


def test_two_workers_with_groups_match_one_process(corpus_with_two_guide_batches, tmp_path):  # noqa: F811
    data = corpus_with_two_guide_batches
    flags = [*DDP_FLAGS, "--guided-groups", "embed,encoder,decoder"]
    ddp = json_logs(two_workers(data, tmp_path / "ddp", flags)[0])
    assert len(ddp) == 12 and all(float(r["guided_rank_drift"]) == 0.0 for r in ddp)
    matches_one_process(data, tmp_path / "single", flags, ddp, KEYS)
    assert len({float(ddp[-1][f"guided_beta1/{g}"]) for g in GROUPS}) == 3


def test_streamed_per_group_hypergradient_equals_the_materialised_one(tiny_corpus):
    """The meta step's hooks fold each guidance gradient into its group's rows: the logged
    hgrad_NAME/GROUP equal the engine's (G, K) hypergradient from a materialised guidance
    gradient, and each group's values are logged."""
    task, model, fairseq_opt = build(tiny_corpus, ["--optimizer", "guided_lamb", "--guided-hparams", "alpha,beta1",
                                                   "--guided-meta-lr", "0", "--guided-groups", "layer",
                                                   "--guidance-max-tokens", "200"])
    guided = fairseq_opt.guided
    groups = guided.learned.groups
    assert groups[:3] == ["embed", "encoder.layers.0", "decoder.layers.0"]
    task.load_dataset("train")
    batch = task.dataset("train").collater([task.dataset("train")[i] for i in range(24)])
    for update in range(3):  # the third with its meta step, streamed
        model.zero_grad()
        token_mean_nll(model, batch, task.target_dictionary.pad())[0].backward()
        with metrics.aggregate(new_root=True) as agg:
            task.optimizer_step(fairseq_opt, model, update_num=1 if update < 2 else 0)
    streamed = torch.stack([torch.stack([torch.as_tensor(agg[f"hgrad_{n}/{g}"].avg) for n in guided.learned.names])
                            for g in groups]).to(torch.float64)
    assert f"guided_beta1/{groups[1]}" in agg and "guided_beta1" not in agg

    by_param = dict(zip(map(id, (p for p in model.parameters() if p.requires_grad)),
                        guidance_grads(task, model, task.guidance.sample(model, 0, torch.device("cpu")))))
    materialised = guided.hypergradient([by_param[id(p)] for _, p in guided.stepped_params()])
    assert materialised.shape == (len(groups), 2) and torch.all(streamed != 0)
    torch.testing.assert_close(streamed, materialised, rtol=1e-5, atol=1e-9)
