"""fairseq-train --user-dir fairseq_guided on a binarized corpus with a guide split: the
learned values move, the checkpoint saves, fairseq-generate loads it and prints BLEU."""
import math

import pytest
import torch

import fairseq_guided  # noqa: F401 (its safe globals let torch.load read fairseq checkpoints)

from conftest import BIN, PLUGIN, bleu_of, json_logs, run, train_cmd

OPTIMIZER_FLAGS = {
    "guided_lamb": ["--lr", "0.01"],
    "guided_adam": ["--lr", "0.005", "--adam-betas", "(0.9, 0.98)"],
    "guided_adafactor": ["--lr", "0.01", "--beta1", "0.9"],
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZER_FLAGS))
def test_train_learns_alpha_and_beta1_then_generate_scores(tiny_corpus, tmp_path, optimizer):
    save = tmp_path / "ckpt"
    out = run(train_cmd(tiny_corpus, save, "--optimizer", optimizer, *OPTIMIZER_FLAGS[optimizer],
                        "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0.01",
                        "--max-update", "40"))
    assert out.returncode == 0, out.stdout[-4000:]
    rows = json_logs(out.stdout)
    assert len(rows) == 40
    alphas = [float(r["guided_alpha"]) for r in rows]
    betas = [float(r["guided_beta1"]) for r in rows]
    hgrads = [float(r["hgrad_beta1"]) for r in rows]
    assert all(math.isfinite(v) for v in alphas + betas + hgrads)
    assert abs(alphas[-1] - 1.0) > 1e-3 and abs(betas[-1] - 0.9) > 1e-3, (alphas[-1], betas[-1])
    assert len(set(alphas)) > 20  # it moves at every meta step
    lrs = [float(r["lr"]) for r in rows]
    effective = [float(r["eff_lr"]) for r in rows]
    for a, lr, eff in zip(alphas, lrs, effective):  # eff_lr = alpha x scheduled lr
        assert math.isclose(eff, a * lr, rel_tol=1e-3)
    assert all(float(r["guide_loss"]) > 0 for r in rows)

    ckpt = save / "checkpoint_last.pt"
    state = torch.load(ckpt, weights_only=True)  # fairseq_guided's safe globals are imported
    hyper = state["last_optimizer_state"]["guided_hyper"]
    assert hyper["names"] == ["alpha", "beta1"]

    gen = run([BIN / "fairseq-generate", tiny_corpus, "--user-dir", PLUGIN, "--path", ckpt,
               "--gen-subset", "test", "--beam", "4", "--batch-size", "64"])
    assert gen.returncode == 0, gen.stdout[-3000:]
    assert 0.0 <= bleu_of(gen.stdout) <= 100.0


def test_meta_interval_and_train_batch_guidance(tiny_corpus, tmp_path):
    out = run(train_cmd(tiny_corpus, tmp_path / "a", "--optimizer", "guided_adam", "--lr", "0.005",
                        "--guided-hparams", "alpha", "--guided-meta-lr", "0.01", "--max-update", "12",
                        "--guidance-interval", "4", "--guidance-refresh", "step"))
    assert out.returncode == 0, out.stdout[-3000:]
    alphas = [float(r["guided_alpha"]) for r in json_logs(out.stdout)]
    # values change only after updates 1, 5, 9 (update_num 0, 4, 8)
    changes = [i for i in range(1, len(alphas)) if alphas[i] != alphas[i - 1]]
    assert changes == [4, 8], alphas

    out = run(train_cmd(tiny_corpus, tmp_path / "b", "--optimizer", "guided_lamb", "--lr", "0.01",
                        "--guided-hparams", "beta1", "--guided-meta-lr", "0.01", "--max-update", "10",
                        "--guidance-source", "train"))
    assert out.returncode == 0, out.stdout[-3000:]
    rows = json_logs(out.stdout)
    assert "guide_loss" not in rows[-1]  # no extra forward/backward
    betas = [float(r["guided_beta1"]) for r in rows]
    assert betas[0] == pytest.approx(0.9, abs=1e-6)  # nothing to differentiate at update 1
    assert betas[-1] != betas[0]


def test_guidance_time_pass_logs_timings_and_leaves_training_unchanged(tiny_corpus, tmp_path):
    """The benchmark's --guidance-time-pass: each meta step and one plain pass of the
    guidance batch are timed and logged, and training follows the untimed run exactly."""
    flags = ["--optimizer", "guided_adam", "--lr", "0.005", "--guided-hparams", "alpha,beta1",
             "--guided-meta-lr", "0.01", "--max-update", "8", "--guidance-interval", "2"]
    plain = json_logs(run(train_cmd(tiny_corpus, tmp_path / "plain", *flags)).stdout)
    timed_out = run(train_cmd(tiny_corpus, tmp_path / "timed", *flags, "--guidance-time-pass"))
    assert timed_out.returncode == 0, timed_out.stdout[-3000:]
    timed = json_logs(timed_out.stdout)
    assert len(plain) == len(timed) == 8
    for a, b in zip(plain, timed):
        for key in ("loss", "guided_alpha", "guided_beta1"):
            assert a[key] == b[key], (key, a, b)
    meta_rows = [r for r in timed if (int(r["num_updates"]) - 1) % 2 == 0]
    assert all(float(r["guide_meta_ms"]) > 0 and float(r["guide_pass_ms"]) > 0 for r in meta_rows)
