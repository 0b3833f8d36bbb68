"""--optimizer schedulefree_adamw and --optimizer prodigy: the packages' own optimizers
behind fairseq's command line. Same updates as the packages, bad flags refused before
training, exact resume after SIGKILL, and schedule-free checkpoints holding the weights
that fairseq-train validated."""
import argparse
import math
import sys

import pytest
import torch
from fairseq import checkpoint_utils, optim, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import BaseFairseqModel
from prodigyopt import Prodigy
from schedulefree import AdamWScheduleFree

import fairseq_guided  # noqa: F401 (registers the optimizers; safe globals for torch.load)
from conftest import PLUGIN, json_logs, kill_at_update, run, train_cmd

NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]


def optimizer_cfg(*flags):
    """fairseq's own parsing of a training command line, as fairseq-train does it."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=["unused-data", "--user-dir", PLUGIN,
                                                           "--arch", "transformer", *flags])
    return convert_namespace_to_omegaconf(args).optimizer


def small_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


PARITY = {
    "schedulefree": (["--optimizer", "schedulefree_adamw", "--lr", "0.01", "--weight-decay", "0.01",
                      "--schedulefree-warmup-steps", "3"],
                     lambda p: AdamWScheduleFree(p, lr=0.01, weight_decay=0.01, warmup_steps=3)),
    "schedulefree-loop": (["--optimizer", "schedulefree_adamw", "--lr", "0.01", "--schedulefree-no-foreach",
                           "--schedulefree-betas", "(0.8, 0.99)"],
                          lambda p: AdamWScheduleFree(p, lr=0.01, betas=(0.8, 0.99), foreach=False)),
    "prodigy": (["--optimizer", "prodigy", "--lr", "1.0"], lambda p: Prodigy(p, lr=1.0)),
    "prodigy-options": (["--optimizer", "prodigy", "--lr", "0.5", "--weight-decay", "0.1",
                         "--prodigy-bias-correction", "--prodigy-growth-rate", "1.1", "--prodigy-d-coef", "2"],
                        lambda p: Prodigy(p, lr=0.5, weight_decay=0.1, use_bias_correction=True,
                                          growth_rate=1.1, d_coef=2.0)),
}


@pytest.mark.parametrize("case", list(PARITY))
def test_wrapper_steps_exactly_as_the_package(case):
    flags, package_optimizer = PARITY[case]
    ours, theirs = small_model(), small_model()
    wrapper = optim.build_optimizer(optimizer_cfg(*flags), list(ours.parameters()))
    reference = package_optimizer(list(theirs.parameters()))
    schedule_free = hasattr(reference, "train")
    if schedule_free:
        wrapper.train()
        reference.train()
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        for a, b in zip(ours.parameters(), theirs.parameters()):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()  # both packages overwrite grads in place
        wrapper.step()
        reference.step()
    if schedule_free:  # the evaluation point too
        wrapper.eval()
        reference.eval()
    moved = False
    for a, b, c in zip(ours.parameters(), theirs.parameters(), small_model().parameters()):
        assert torch.equal(a, b)
        moved = moved or not torch.equal(a, c)
    assert moved


BAD = {
    "sf-beta1-zero": (["--optimizer", "schedulefree_adamw", "--lr", "0.0025", "--schedulefree-betas", "(0, 0.999)"],
                      ["--schedulefree-betas", "(0, 1)"]),
    "sf-betas-count": (["--optimizer", "schedulefree_adamw", "--lr", "0.0025", "--schedulefree-betas", "0.9"],
                       ["--schedulefree-betas", "2 comma-separated numbers"]),
    "sf-eps": (["--optimizer", "schedulefree_adamw", "--lr", "0.0025", "--schedulefree-eps", "0"],
               ["--schedulefree-eps", "> 0"]),
    "sf-warmup": (["--optimizer", "schedulefree_adamw", "--lr", "0.0025", "--schedulefree-warmup-steps", "-1"],
                  ["--schedulefree-warmup-steps", ">= 0"]),
    "sf-lr": (["--optimizer", "schedulefree_adamw", "--lr", "0"], ["--lr", "> 0", "0.0025"]),
    "prodigy-beta2": (["--optimizer", "prodigy", "--lr", "1", "--prodigy-betas", "(0.9, 1.0)"],
                      ["--prodigy-betas", "[0, 1)"]),
    "prodigy-beta3": (["--optimizer", "prodigy", "--lr", "1", "--prodigy-beta3", "1.5"],
                      ["--prodigy-beta3", "[0, 1)"]),
    "prodigy-d0": (["--optimizer", "prodigy", "--lr", "1", "--prodigy-d0", "0"], ["--prodigy-d0", "> 0"]),
    "prodigy-growth": (["--optimizer", "prodigy", "--lr", "1", "--prodigy-growth-rate", "0.5"],
                       ["--prodigy-growth-rate", ">= 1"]),
    "prodigy-slice": (["--optimizer", "prodigy", "--lr", "1", "--prodigy-slice-p", "0"],
                      ["--prodigy-slice-p", ">= 1"]),
    "prodigy-decay": (["--optimizer", "prodigy", "--lr", "1", "--weight-decay", "-0.1"],
                      ["--weight-decay", ">= 0"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_flag_is_named_when_fairseq_builds_the_optimizer(case):
    flags, expected = BAD[case]
    with pytest.raises(ValueError) as err:
        optim.build_optimizer(optimizer_cfg(*flags), list(small_model().parameters()))
    for text in expected:
        assert text in str(err.value), (text, str(err.value))


def stock_cmd(data, save_dir, *extra):
    """fairseq's own translation task with fairseq's default constant lr schedule."""
    cmd = train_cmd(data, save_dir, *NO_DROPOUT, *extra, batching=("--batch-size", "16"))
    cmd[cmd.index("guided_translation")] = "translation"
    at = cmd.index("--lr-scheduler")
    del cmd[at:at + 4]  # --lr-scheduler inverse_sqrt --warmup-updates 20
    return cmd


def test_fairseq_train_stops_before_the_first_update(tiny_corpus, tmp_path):
    out = run(stock_cmd(tiny_corpus, tmp_path, "--optimizer", "prodigy", "--lr", "1", "--max-update", "3",
                        "--prodigy-d-coef", "-1"))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert "--prodigy-d-coef must be > 0" in out.stdout, out.stdout[-2000:]


OPTIMIZERS = {"schedulefree_adamw": ["--lr", "0.0025"], "prodigy": ["--lr", "1.0"]}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sigkill_then_resume_follows_the_uninterrupted_run_bitwise(tiny_corpus, tmp_path, name):
    # inside epoch 1 (see test_production.py); a validation and save every 10 updates,
    # each switching schedule-free to eval and back
    flags = ["--optimizer", name, *OPTIMIZERS[name], "--max-update", "40", "--save-interval-updates", "10"]
    straight = run(stock_cmd(tiny_corpus, tmp_path / "straight", *flags))
    assert straight.returncode == 0, straight.stdout[-2000:]

    cmd = stock_cmd(tiny_corpus, tmp_path / "killed", *flags)
    killed_at = kill_at_update(cmd, 25)

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    first = int(json_logs(resumed.stdout)[0]["num_updates"])
    assert 1 < first <= killed_at  # restarted from a checkpoint (update 20)
    expected = {int(r["num_updates"]): r for r in json_logs(straight.stdout)}
    for row in json_logs(resumed.stdout):
        assert row["loss"] == expected[int(row["num_updates"])]["loss"], row["num_updates"]
    assert json_logs(resumed.stdout, "valid")[-1]["valid_loss"] == json_logs(straight.stdout, "valid")[-1]["valid_loss"]

    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "checkpoint_last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    state_a, state_b = a["last_optimizer_state"], b["last_optimizer_state"]
    assert state_a["param_groups"][0] == state_b["param_groups"][0]
    for i, tensors in state_a["state"].items():
        for key, value in tensors.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b["state"][i][key])), (i, key)


VALIDATE_TWO = """import sys
from fairseq_cli.validate import cli_main
for path in sys.argv[2:]:
    sys.argv = ["fairseq-validate", sys.argv[1], "--path", path, *{flags!r}]
    cli_main()
"""


def test_schedulefree_checkpoint_evaluates_as_the_in_memory_model(tiny_corpus, tmp_path):
    """fairseq-train's validation at update 20 and fairseq's own validate on
    checkpoint_1_20.pt give the same loss; the gradient point y (what the parameters hold
    during training) gives another, so the check can tell them apart."""
    out = run(stock_cmd(tiny_corpus, tmp_path, "--optimizer", "schedulefree_adamw", "--lr", "0.0025",
                        "--max-update", "20", "--save-interval-updates", "20"))
    assert out.returncode == 0, out.stdout[-2000:]
    logged = json_logs(out.stdout, "valid")[-1]
    assert logged["valid_num_updates"] == "20"

    ckpt = torch.load(tmp_path / "checkpoint_1_20.pt", weights_only=True)
    group = ckpt["last_optimizer_state"]["param_groups"][0]
    assert group["train_mode"] is False  # saved at the evaluation point x
    # y = x + (1 - beta1)(z - x), as the package's train() computes it, on the model that
    # fairseq loads from the checkpoint (its parameters in the optimizer's order)
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(tmp_path / "checkpoint_1_20.pt")], arg_overrides={"data": str(tiny_corpus)})
    params = [p for p in models[0].parameters() if p.requires_grad]
    state = ckpt["last_optimizer_state"]["state"]
    assert len(params) == len(state)
    with torch.no_grad():
        for i, p in enumerate(params):
            p.lerp_(state[i]["z"], 1 - group["betas"][0])
    ckpt["model"] = models[0].state_dict()
    torch.save(ckpt, tmp_path / "at_y.pt")

    flags = ["--user-dir", PLUGIN, "--task", "translation", "--batch-size", "16", "--valid-subset", "valid",
             "--log-format", "json", "--num-workers", "0"]
    both = run([sys.executable, "-c", VALIDATE_TWO.format(flags=flags), tiny_corpus,
                tmp_path / "checkpoint_1_20.pt", tmp_path / "at_y.pt"])
    assert both.returncode == 0, both.stdout[-2000:]
    at_x, at_y = json_logs(both.stdout, "valid")
    assert at_x["valid_loss"] == logged["valid_loss"], (at_x, logged)
    assert at_y["valid_loss"] != logged["valid_loss"], (at_y, logged)


class TwoLayerFairseqModel(BaseFairseqModel):
    """The smallest fairseq model: what the mode link looks for is a BaseFairseqModel."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


PRECISIONS = {"fp32": [], "fp16-per-tensor": ["--fp16", "--fp16-no-flatten-grads"], "fp16-flat": ["--fp16"]}


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_model_weights_follow_train_eval_and_state_dict(precision, monkeypatch):
    """fairseq's trainer only calls model.train() / model.eval() / model.state_dict(): the
    model must then hold y, x and x. Under --fp16 the model holds half copies of fairseq's
    fp32 masters (per tensor, or one flat buffer), which must be refreshed on each switch."""
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, input_args=[
        "unused-data", "--user-dir", PLUGIN, "--arch", "transformer", "--optimizer", "schedulefree_adamw",
        "--lr", "0.01", *PRECISIONS[precision]]))
    torch.manual_seed(0)
    model = TwoLayerFairseqModel()
    if cfg.common.fp16:
        monkeypatch.setattr(torch.cuda, "current_device", lambda: None)  # flat buffer's device key
        model.half()
        optimizer = optim.FP16Optimizer.build_optimizer(cfg, list(model.parameters()))
        schedule_free = optimizer.fp32_optimizer
    else:
        optimizer = schedule_free = optim.build_optimizer(cfg.optimizer, list(model.parameters()))
    masters = [p for g in schedule_free.param_groups for p in g["params"]]
    assert len(masters) == (1 if precision == "fp16-flat" else 4)

    def model_holds_masters():
        flat = torch.cat([m.detach().flatten() for m in masters])
        return torch.equal(torch.cat([p.detach().flatten() for p in model.parameters()]), flat.to(model.a.weight.dtype))

    batch = torch.randn(8, 4).to(model.a.weight.dtype)
    for _ in range(5):
        model.train()
        optimizer.zero_grad()
        optimizer.backward(model(batch).float().pow(2).mean())
        optimizer.clip_grad_norm(0)
        optimizer.step()
    y = torch.cat([m.detach().flatten() for m in masters]).clone()
    assert schedule_free.param_groups[0]["train_mode"] and model_holds_masters()

    model.eval()
    model(batch)  # a validation forward: x
    x = torch.cat([m.detach().flatten() for m in masters]).clone()
    assert not schedule_free.param_groups[0]["train_mode"] and model_holds_masters()
    assert not torch.equal(x.to(model.a.weight.dtype), y.to(model.a.weight.dtype))

    model.train()
    model(batch)  # the next training forward: back to y (up to the rounding of the round trip)
    assert schedule_free.param_groups[0]["train_mode"] and model_holds_masters()
    assert torch.allclose(torch.cat([m.detach().flatten() for m in masters]), y, atol=1e-6)

    saved = model.state_dict()  # a checkpoint: x again, and the optimizer state says so
    assert model_holds_masters() and torch.equal(saved["a.weight"], model.a.weight.detach())
    assert torch.allclose(torch.cat([m.detach().flatten() for m in masters]), x, atol=1e-6)
    assert optimizer.state_dict()["param_groups"][0]["train_mode"] is False


MIXED = {
    "schedulefree-fp16-update-freq": ["--optimizer", "schedulefree_adamw", "--lr", "0.0025", "--fp16",
                                      "--fp16-no-flatten-grads", "--update-freq", "2"],
    "prodigy-amp-update-freq": ["--optimizer", "prodigy", "--lr", "1.0", "--amp", "--update-freq", "2"],
}


@pytest.mark.parametrize("case", list(MIXED))
def test_trains_under_fairseq_mixed_precision(tiny_corpus, tmp_path, case):
    out = run(stock_cmd(tiny_corpus, tmp_path, *MIXED[case], "--max-update", "15"))
    assert out.returncode == 0, out.stdout[-2000:]
    losses = [float(r["loss"]) for r in json_logs(out.stdout)]
    assert len(losses) == 15 and all(loss == loss for loss in losses)  # no NaN
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.3, losses  # it learns
    if "prodigy" in case:  # its step-size estimate reaches the log, and grew from d0 = 1e-6
        rows = json_logs(out.stdout)
        d = [float(r["prodigy_d"]) for r in rows]
        assert d[0] >= 1e-6 and d[-1] > 10 * 1e-6 and d == sorted(d), d
        for r in rows:
            assert math.isclose(float(r["eff_lr"]), float(r["prodigy_d"]) * float(r["lr"]), rel_tol=1e-3), r


@pytest.mark.parametrize("name", ["schedulefree_adamw", "prodigy"])
def test_benchmark_rows_train_under_flat_fp16(tiny_corpus, name):
    """The benchmark's rows for the tuning-free optimizers, with its cuda preset's flat
    --fp16 (fairseq's one CUDA call stood in for), on a shrunk model."""
    from guided_recipes.bench import benchmark
    from test_shipped_commands import LAUNCH, SHRINK_CLI

    row = next(r for r in benchmark.configurations("cuda") if r[0] == name)
    args = argparse.Namespace(device="cuda", updates=3, log_interval=1)
    cmd = benchmark.bench_command(args, benchmark.PRESETS["cuda"], *row[1:])
    out = run(LAUNCH + ["fairseq-train", tiny_corpus, *cmd, *SHRINK_CLI, "--source-lang", "src",
                        "--target-lang", "tgt"])
    assert out.returncode == 0, out.stdout[-4000:]
    rows = json_logs(out.stdout)
    assert len(rows) == 3 and "loss_scale" in rows[-1]  # FP16Optimizer, flat masters
    assert "does not support flat params" not in out.stdout
