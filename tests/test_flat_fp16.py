"""Flat --fp16 (fairseq's default: one fp32 master buffer) for all three guided optimizers,
run on the CPU through fairseq-train's own code with its one CUDA call stood in for
(tests/launchers/cpu_as_cuda.py). LAMB and Adafactor step per-parameter views of
the buffer, Adam the buffer itself; both must give the very numbers of the per-tensor
fp32 masters of --fp16-no-flatten-grads, which hold the same values."""
import itertools
import math
import sys

import pytest
import torch

from conftest import REPO, json_logs, run, train_cmd

LAUNCH = [sys.executable, REPO / "tests" / "launchers" / "cpu_as_cuda.py", "fairseq-train"]
EXTRA = {"guided_adafactor": ["--beta1", "0.9", "--scale-parameter"]}
FIELDS = ("loss", "guide_loss", "guided_alpha", "guided_beta1", "hgrad_alpha", "hgrad_beta1")


def fp16_run(data, save, optimizer, *flags):
    cmd = train_cmd(data, save, "--optimizer", optimizer, *EXTRA.get(optimizer, []), "--lr", "0.005",
                    "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0.01", "--max-update", "5",
                    "--fp16", *flags)
    out = run(LAUNCH + cmd[1:])  # cmd[0] is the fairseq-train executable
    assert out.returncode == 0, out.stdout[-3000:]
    return out.stdout


@pytest.mark.parametrize("optimizer", ["guided_lamb", "guided_adafactor", "guided_adam"])
def test_flat_masters_give_the_numbers_of_per_tensor_masters(tiny_corpus, tmp_path, optimizer):
    flat = fp16_run(tiny_corpus, tmp_path / "flat", optimizer)
    per_tensor = fp16_run(tiny_corpus, tmp_path / "per_tensor", optimizer, "--fp16-no-flatten-grads")
    assert "does not support flat params" not in flat
    a, b = json_logs(flat), json_logs(per_tensor)
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b):
        for key in FIELDS:
            x, y = float(ra[key]), float(rb[key])
            assert math.isfinite(x) and math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7), (key, x, y)
    assert float(a[-1]["guided_alpha"]) != 1.0  # the values did move


def test_a_layout_the_task_did_not_record_is_refused(tiny_corpus, tmp_path):
    """Under a stock task nothing records the layout: fairseq's own message asks for
    --fp16-no-flatten-grads instead of LAMB treating the whole buffer as one tensor."""
    cmd = train_cmd(tiny_corpus, tmp_path, "--optimizer", "guided_lamb", "--lr", "0.005", "--max-update", "1",
                    "--fp16")
    cmd[cmd.index("guided_translation")] = "translation"
    out = run(LAUNCH + cmd[1:])
    assert out.returncode != 0 and "please set --fp16-no-flatten-grads" in out.stdout, out.stdout[-2000:]


def test_a_model_changed_after_the_task_built_it_is_refused(tiny_corpus, monkeypatch):
    """A layer taken out and put back after the task built the model (as code that
    re-initialises a layer by replacing it does) keeps every tensor and the total size but
    moves that layer's tensors to the end of the layer: fairseq flattens them in the new
    order, while the guided task recorded the old one. LAMB would cut the buffer into
    tensors of the wrong shapes and update silently; the first training step refuses it."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim.fp16_optimizer import FP16Optimizer

    from conftest import PLUGIN, TINY_MODEL

    # the one CUDA call of fairseq's flat buffer, stood in for as tests/launchers/cpu_as_cuda.py does
    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(tiny_corpus), "--user-dir", PLUGIN, "--task", "guided_translation",
                                                *TINY_MODEL, "--optimizer", "guided_lamb", "--lr", "0.005",
                                                "--fp16", "--max-tokens", "1000"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    layer = model.encoder.layers[0]
    fc1 = layer.fc1
    del layer.fc1
    layer.fc1 = fc1  # registered again: now after fc2 and the layer norm
    params = [p for p in itertools.chain(model.parameters(), criterion.parameters()) if p.requires_grad]
    shapes = [tuple(p.shape) for p in params]
    assert (128, 64) in shapes and shapes.index((128, 64)) > shapes.index((64, 128))  # fc1.weight after fc2.weight
    optimizer = FP16Optimizer.build_optimizer(cfg, params)
    views = optimizer.fp32_optimizer.flat_views
    assert views is not None and sum(v.numel() for v in views) == sum(p.numel() for p in params)
    assert [tuple(v.shape) for v in views] != shapes
    task.load_dataset("train")
    data = task.dataset("train")
    sample = data.collater([data[i] for i in range(8)])
    with pytest.raises(RuntimeError, match=r"--fp16 \(flat\): .* fairseq flattened .* pass --fp16-no-flatten-grads"):
        task.train_step(sample, model, criterion, optimizer, update_num=0)
