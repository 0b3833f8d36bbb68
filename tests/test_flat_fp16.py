"""Flat --fp16 (fairseq's default: one fp32 master buffer) for all three guided optimizers,
run on the CPU through fairseq-train's own code with its one CUDA call stood in for
(tests/launchers/cpu_as_cuda.py). LAMB and Adafactor step per-parameter views of
the buffer, Adam the buffer itself; both must give the very numbers of the per-tensor
fp32 masters of --fp16-no-flatten-grads, which hold the same values."""
import math
import sys

import pytest

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
