"""The guided step under fairseq's precision wrappers, as far as they run on a CPU:
--fp16 --fp16-no-flatten-grads (FP16Optimizer with fp32 masters), --memory-efficient-fp16
and --amp; fairseq's loss-scale overflow path with its .cuda() call stood in for (flat
--fp16: tests/test_flat_fp16.py)."""
import math
import sys

import pytest
import torch

import fairseq_guided  # noqa: F401 (safe globals for torch.load of fairseq checkpoints)
from conftest import REPO, json_logs, run, train_cmd

MODES = {
    "fp16-fp32-masters": ("guided_lamb", ["--fp16", "--fp16-no-flatten-grads"]),
    "memory-efficient-fp16": ("guided_adam", ["--memory-efficient-fp16"]),
    "amp": ("guided_adafactor", ["--amp"]),
}
EXTRA = {"guided_adafactor": ["--beta1", "0.9"]}


def guided_run(data, save, optimizer, *flags):
    out = run(train_cmd(data, save, "--optimizer", optimizer, *EXTRA.get(optimizer, []), "--lr", "0.005",
                        "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0.01", "--max-update", "4",
                        *flags))
    assert out.returncode == 0, out.stdout[-3000:]
    return json_logs(out.stdout)


@pytest.mark.parametrize("mode", list(MODES))
def test_hypergradients_in_half_precision_track_the_fp32_run(tiny_corpus, tmp_path, mode):
    optimizer, flags = MODES[mode]
    full = guided_run(tiny_corpus, tmp_path / "fp32", optimizer)
    half = guided_run(tiny_corpus, tmp_path / "half", optimizer, *flags)
    assert len(full) == len(half) == 4
    for a, b in zip(full[1:], half[1:]):  # update 1 has lr 0 under warm-up: h_alpha = 0
        for key in ("hgrad_alpha", "hgrad_beta1"):
            x, y = float(a[key]), float(b[key])
            assert math.isfinite(y) and abs(x - y) <= 0.05 * abs(x) + 1e-4, (key, x, y)
        assert math.isclose(float(a["guided_alpha"]), float(b["guided_alpha"]), rel_tol=1e-3)


def test_train_batch_guidance_under_fp16_tracks_the_fp32_run(tiny_corpus, tmp_path):
    """--guidance-source train differentiates the previous update with this update's
    gradient, which fairseq's FP16Optimizer holds still multiplied by the loss scale (its
    1/(scale x sample size) factor is applied only in step()) and rescales in place; the
    kept gradient of the previous update must be a copy of the unscaled one. The
    hypergradients are those of the fp32 run, as in heldout mode."""
    flags = ["--guidance-source", "train", "--max-update", "6"]
    full = guided_run(tiny_corpus, tmp_path / "fp32", "guided_lamb", *flags)
    half = guided_run(tiny_corpus, tmp_path / "half", "guided_lamb", *flags, "--fp16", "--fp16-no-flatten-grads")
    assert len(full) == len(half) == 6
    assert "hgrad_beta1" not in full[0] and "hgrad_beta1" not in half[0]  # nothing to differentiate yet
    for a, b in zip(full[2:], half[2:]):  # update 2 differentiates update 1, whose lr is ~0 (warm-up)
        for key in ("hgrad_alpha", "hgrad_beta1"):
            x, y = float(a[key]), float(b[key])
            assert x != 0 and math.isfinite(y) and abs(x - y) <= 0.05 * abs(x) + 1e-4, (key, x, y)
    for key in ("guided_alpha", "guided_beta1"):
        assert float(full[-1][key]) != float(full[0][key])  # the values moved
        assert math.isclose(float(full[-1][key]), float(half[-1][key]), rel_tol=1e-3), key


def test_overflowing_steps_never_reach_the_learned_values(tiny_corpus, tmp_path):
    """A huge initial loss scale overflows the first training passes (fairseq skips those
    updates); the guidance pass uses the same scale, so an overflow there yields a
    non-finite hypergradient that is counted and dropped. Every meta step is accounted
    for: applied + dropped = updates made."""
    # fairseq's overflow path calls .cuda(): on a CPU the launcher stands in for it
    cmd = train_cmd(tiny_corpus, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.005",
                    "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0.01", "--max-update", "6",
                    "--fp16", "--fp16-no-flatten-grads", "--fp16-init-scale", str(2 ** 24),
                    "--fp16-scale-window", "1")
    out = run([sys.executable, REPO / "tests" / "launchers" / "cpu_as_cuda.py", "fairseq-train", *cmd[1:]])
    assert out.returncode == 0, out.stdout[-3000:]
    assert "gradient overflow detected" in out.stdout
    rows = json_logs(out.stdout)
    assert all(math.isfinite(float(r["guided_alpha"])) for r in rows)
    hyper = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=True)["last_optimizer_state"]["guided_hyper"]
    assert torch.equal(hyper["steps"] + hyper["nonfinite_count"], torch.full((2,), 6.0, dtype=torch.float64))
    assert torch.isfinite(hyper["raw"]).all() and torch.isfinite(hyper["exp_avg_sq"]).all()
