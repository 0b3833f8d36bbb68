"""What the guidance step must do, asserted on computed numbers (issue 15, item 8: each
test fails on one of the deliberate bugs that no test used to notice):
- the model is back in train() mode (dropout on) after the guidance pass;
- --guidance-refresh never / step / epoch draw the batches they say;
- rank r of W workers takes global position j*W + r of the guidance batch sequence;
- guided_last_step_lrs survives a checkpoint;
- guide_loss is the token mean, in bits, of the guidance batch at the updated parameters.
"""
import json
import math
import subprocess
import sys

import torch

from conftest import ENV, PLUGIN, TINY_MODEL, json_logs, run, train_cmd
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
from fairseq_guided.hypergrad.adam import GuidedAdam

# A real guided_translation task and model, built in a child process as fairseq-train
# builds them (optionally joining a gloo group of WORLD processes and loading a
# checkpoint); prints the dataset ids of the guidance sample at each update number and,
# with a checkpoint, the token-mean loss in bits of the first one.
PROBE = r"""
import json, math, sys
import torch, torch.distributed as dist
import torch.nn.functional as F
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
spec = json.loads(sys.argv[1])
if spec["world"] > 1:
    dist.init_process_group("gloo", init_method="file://" + spec["rdv"], rank=spec["rank"],
                            world_size=spec["world"])
parser = options.get_training_parser()
cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, spec["argv"]))
task = tasks.setup_task(cfg.task)
model = task.build_model(cfg.model)
out = {"ids": [sorted(i for part in task.guidance.sample(model, u, "cpu") for i in part["id"].tolist())
               for u in spec["updates"]]}
if spec.get("step"):  # one training step through the task's hooks, as fairseq's Trainer makes it
    from fairseq import optim
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    task.load_dataset("train")
    batches = task.get_batch_iterator(task.dataset("train"), max_sentences=8, seed=1)
    model.train()
    task.train_step(next(batches.next_epoch_itr(shuffle=False)), model, criterion, optimizer, 0)
    task.optimizer_step(optimizer, model, 0)
    out["guide_ran"] = task.guidance._cached[0] is not None
    out["modules_in_eval"] = sorted(n for n, m in model.named_modules() if not m.training)
if spec.get("checkpoint"):
    state = checkpoint_utils.load_checkpoint_to_cpu(spec["checkpoint"])
    model.load_state_dict(state["model"])
    model.eval()
    nll = count = 0
    for part in task.guidance.sample(model, 0, "cpu"):  # length-sorted parts of one sample
        with torch.no_grad():
            lprobs = model.get_normalized_probs(model(**part["net_input"]), log_probs=True)
        mask = part["target"].ne(task.target_dictionary.pad())
        nll += -lprobs.gather(-1, part["target"].unsqueeze(-1)).squeeze(-1)[mask].double().sum()
        count += mask.sum()
    out["guide_bits"] = float(nll / count / math.log(2))
print("PROBE " + json.dumps(out))
"""


def probe_cmd(data, world=1, rank=0, rdv="", updates=(), checkpoint=None, extra=(), step=False):
    argv = [str(data), "--user-dir", PLUGIN, "--task", "guided_translation", *TINY_MODEL,
            "--optimizer", "guided_adam", "--lr", "0.001", "--guided-hparams", "alpha",
            "--guidance-refresh", "step", "--guidance-batch-size", "8", "--max-tokens", "1000",
            "--cpu", *extra]
    spec = dict(world=world, rank=rank, rdv=rdv, updates=list(updates), checkpoint=checkpoint, argv=argv,
                step=step)
    return [sys.executable, "-c", PROBE, json.dumps(spec)]


def probe_result(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("PROBE "):])


def test_rank_r_of_w_takes_global_position_j_w_plus_r(tiny_corpus, tmp_path):
    one = run(probe_cmd(tiny_corpus, updates=range(16)))
    assert one.returncode == 0, one.stdout[-3000:]
    sequence = probe_result(one.stdout)["ids"]
    # refresh=step: a new batch at each step, 100 examples in 8-sentence batches
    assert len({tuple(ids) for ids in sequence[:12]}) == 12
    procs = [subprocess.Popen(probe_cmd(tiny_corpus, world=2, rank=r, rdv=str(tmp_path / "rdv"),
                                        updates=range(8)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
             for r in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    for rank, out in enumerate(outs):
        for j, ids in enumerate(probe_result(out)["ids"]):
            assert ids == sequence[2 * j + rank], (rank, j)


NO_LEARNING = ["--optimizer", "guided_adam", "--lr", "1e-9", "--guided-hparams", "alpha",
               "--guided-meta-lr", "0", "--guidance-batch-size", "8", "--lr-scheduler", "fixed"]


def guide_losses(rows):
    return [float(r["guide_loss"]) for r in rows]


def test_refresh_modes_draw_the_batches_they_say(tiny_corpus, tmp_path):
    """The parameters hardly move (lr 1e-9), so guide_loss changes only with the batch."""
    never = run(train_cmd(tiny_corpus, tmp_path / "never", *NO_LEARNING, "--max-update", "8"))
    step = run(train_cmd(tiny_corpus, tmp_path / "step", *NO_LEARNING, "--max-update", "8",
                         "--guidance-refresh", "step"))
    epoch = run(train_cmd(tiny_corpus, tmp_path / "epoch", *NO_LEARNING, "--max-epoch", "2",
                          "--guidance-refresh", "epoch"))
    for out in (never, step, epoch):
        assert out.returncode == 0, out.stdout[-2000:]
    assert len(set(guide_losses(json_logs(never.stdout)))) == 1
    assert len(set(guide_losses(json_logs(step.stdout)))) >= 6
    rows = json_logs(epoch.stdout)
    by_epoch = [{float(r["guide_loss"]) for r in rows if int(r["epoch"]) == e} for e in (1, 2)]
    assert len(by_epoch[0]) == 1 and len(by_epoch[1]) == 1 and by_epoch[0] != by_epoch[1]
    # epoch 1 uses the batch 'never' uses; epoch 2 the second batch of 'step'
    assert by_epoch[0] == set(guide_losses(json_logs(never.stdout)))
    assert by_epoch[1] == {guide_losses(json_logs(step.stdout))[1]}


def test_guide_loss_is_the_token_mean_in_bits_at_the_updated_parameters(tiny_corpus, tmp_path):
    out = run(train_cmd(tiny_corpus, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.005",
                        "--guided-hparams", "alpha", "--guidance-batch-size", "8", "--max-update", "6"))
    assert out.returncode == 0, out.stdout[-2000:]
    logged = float(json_logs(out.stdout)[-1]["guide_loss"])
    probe = run(probe_cmd(tiny_corpus, updates=[0], checkpoint=str(tmp_path / "ckpt" / "checkpoint_last.pt"),
                          extra=["--guidance-refresh", "never"]))
    assert probe.returncode == 0, probe.stdout[-3000:]
    assert math.isclose(logged, probe_result(probe.stdout)["guide_bits"], abs_tol=1.5e-3)


def test_the_model_is_back_in_train_mode_after_the_meta_step(tiny_corpus):
    """The guidance pass runs in eval() (no dropout in the guidance loss) and must restore
    train(). fairseq 0.12.3.1's Trainer happens to call model.train() at every train_step,
    which would hide a model left in eval() in fairseq-train; the task hook must not rely on
    it (a --update-freq loop, another trainer, a validation hook after optimizer_step)."""
    out = run(probe_cmd(tiny_corpus, step=True))
    assert out.returncode == 0, out.stdout[-3000:]
    result = probe_result(out.stdout)
    assert result["guide_ran"] and result["modules_in_eval"] == []


def test_last_step_lrs_survive_a_checkpoint():
    """The hypergradient differentiates the step that was taken, at the lr it used; the
    scheduler has already set the next lr when a checkpoint is written."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5))]
    meta = MetaAdamConfig()

    def build(p, lr):
        return GuidedAdam(p, LearnedHyperParams(["alpha", "beta1"], {"alpha": 1.0, "beta1": 0.9},
                                                {"alpha": 1.0, "beta1": 1.0}, meta), lr=lr)

    opt = build(params, 0.1)
    params[0].grad = torch.randn(5)
    opt.step()
    for g in opt.param_groups:
        g["lr"] = 0.05  # the scheduler's next lr
    guide = [torch.randn(5)]
    expected = opt.hypergradient(guide)
    copy = [torch.nn.Parameter(params[0].detach().clone())]
    copy[0].grad = params[0].grad.clone()
    restored = build(copy, 0.05)  # a resumed run builds its optimizer at the scheduler's lr
    restored.load_state_dict(opt.state_dict())
    assert restored.last_step_lrs == [0.1]
    assert torch.equal(restored.hypergradient(guide), expected)


def test_alpha_hypergradient_uses_the_lr_of_the_step_taken():
    """fairseq's scheduler sets each group's lr before the step and moves it on after: the
    alpha hypergradient is sched_lr x d/d lr at the lr the step used, whatever the lr the
    optimizer was built with or the lr it holds now."""
    torch.manual_seed(1)
    start, grad, guide = torch.randn(6), torch.randn(6), [torch.randn(6)]
    meta = MetaAdamConfig()

    def stepped(build_lr):
        p = [torch.nn.Parameter(start.clone())]
        opt = GuidedAdam(p, LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, meta), lr=build_lr)
        for g in opt.param_groups:
            g["lr"] = 0.3  # the scheduler's lr for this step
        p[0].grad = grad.clone()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = 0.05  # and its next one
        return opt.hypergradient(guide)

    assert torch.allclose(stepped(0.1), stepped(0.3), rtol=1e-12)
