"""Gradient accumulation, exact resume after SIGKILL, continuing plain fairseq
checkpoints, safe checkpoint loading, and faults in the guided step."""
import math
import shutil
import subprocess

import pytest
import torch

import fairseq_guided  # noqa: F401 (safe globals for torch.load of fairseq checkpoints)
from conftest import BIN, json_logs, kill_at_update, run, train_cmd
from guided_recipes.report.runlogs import learned_curves, log_rows

NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]


def trajectory(output, names=("guided_alpha", "guided_beta1")):
    return [[float(r[n]) for n in names] for r in json_logs(output)]


def test_update_freq_matches_the_full_batch(tiny_corpus, tmp_path):
    """--update-freq 2 with half the batch: the meta step runs once per update and the
    learned values follow the full-batch run. --curriculum keeps the batch order fixed, so
    the two half batches of an update are exactly one full batch."""
    flags = ["--optimizer", "guided_adam", "--lr", "0.005", "--guided-hparams", "alpha,beta1",
             "--guided-meta-lr", "0.01", "--max-update", "20", "--curriculum", "100",
             "--required-batch-size-multiple", "1", "--guidance-batch-size", "16", *NO_DROPOUT]
    full = run(train_cmd(tiny_corpus, tmp_path / "full", *flags, batching=("--batch-size", "16")))
    half = run(train_cmd(tiny_corpus, tmp_path / "half", *flags, "--update-freq", "2",
                         batching=("--batch-size", "8")))
    assert full.returncode == 0 and half.returncode == 0, (full.stdout[-2000:], half.stdout[-2000:])
    a, b = trajectory(full.stdout), trajectory(half.stdout)
    assert len(a) == len(b) == 20
    assert a[-1] != a[0]
    for row_a, row_b in zip(a, b):
        for x, y in zip(row_a, row_b):
            assert math.isclose(x, y, rel_tol=1e-5), (a, b)


def _checkpoint_state(path):
    state = torch.load(path, weights_only=True)
    return state["model"], state["last_optimizer_state"]["guided_hyper"]


def test_sigkill_then_resume_follows_the_uninterrupted_run_bitwise(tiny_corpus, tmp_path):
    # 16 sentences a batch: the 60 updates stay inside epoch 1. (Resuming inside a later
    # epoch, plain fairseq 0.12.3.1 itself draws differently composed batches than the
    # uninterrupted run, so no plugin can be bitwise there.)
    flags = ["--optimizer", "guided_lamb", "--lr", "0.01", "--guided-hparams", "alpha,beta1",
             "--guided-meta-lr", "0.01", "--max-update", "60", "--save-interval-updates", "10",
             "--guidance-refresh", "step", "--guidance-batch-size", "16"]
    for name in ("straight", "killed"):  # --log-file appends, across attempts, as the recipes' runs do
        (tmp_path / name).mkdir()
    straight = run(train_cmd(tiny_corpus, tmp_path / "straight", *flags, "--log-file",
                             tmp_path / "straight" / "train.log", batching=("--batch-size", "16")))
    assert straight.returncode == 0, straight.stdout[-2000:]

    cmd = train_cmd(tiny_corpus, tmp_path / "killed", *flags, "--log-file", tmp_path / "killed" / "train.log",
                    batching=("--batch-size", "16"))
    killed_at = kill_at_update(cmd, 25)
    assert killed_at < 60

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert "Loaded checkpoint" in resumed.stdout
    first_resumed = int(json_logs(resumed.stdout)[0]["num_updates"])
    assert first_resumed <= killed_at  # it really restarted from a checkpoint, not from 0 ...
    assert first_resumed > 1  # ... and not from scratch
    expected = {int(r["num_updates"]): r for r in json_logs(straight.stdout)}
    for row in json_logs(resumed.stdout):
        ref = expected[int(row["num_updates"])]
        for key in ("loss", "guided_alpha", "guided_beta1", "hgrad_alpha", "hgrad_beta1", "guide_loss"):
            assert row[key] == ref[key], (row["num_updates"], key, row[key], ref[key])

    # the appended log holds both attempts; the recipes' curves read the one uninterrupted course
    assert len(log_rows(tmp_path / "killed" / "train.log", "train_inner")) == 60
    assert len([line for line in (tmp_path / "killed" / "train.log").read_text().splitlines()
                if line.startswith('{"') and '"num_updates"' in line]) > 60
    assert learned_curves(tmp_path / "killed", "guided_") == learned_curves(tmp_path / "straight", "guided_")

    model_a, hyper_a = _checkpoint_state(tmp_path / "straight" / "checkpoint_last.pt")
    model_b, hyper_b = _checkpoint_state(tmp_path / "killed" / "checkpoint_last.pt")
    for key in ("raw", "exp_avg", "exp_avg_sq", "steps"):
        assert torch.equal(hyper_a[key], hyper_b[key]), key
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name


def test_plain_fairseq_checkpoint_continues_as_a_guided_run(tiny_corpus, tmp_path):
    plain = run([BIN / "fairseq-train", tiny_corpus, "--task", "translation",
                 *train_cmd(tiny_corpus, tmp_path / "plain")[6:],  # same model and logging flags
                 "--optimizer", "adam", "--lr", "0.005", "--max-update", "30"])
    assert plain.returncode == 0, plain.stdout[-2000:]
    plain_last = json_logs(plain.stdout)[-1]
    cont = run(train_cmd(tiny_corpus, tmp_path / "guided", "--optimizer", "guided_adam", "--lr", "0.005",
                         "--guided-hparams", "alpha,beta1", "--max-update", "40",
                         "--restore-file", tmp_path / "plain" / "checkpoint_last.pt", "--reset-optimizer"))
    assert cont.returncode == 0, cont.stdout[-2000:]
    rows = json_logs(cont.stdout)
    # it continued the plain run's weights (--reset-optimizer restarts fairseq's update count)
    assert int(rows[0]["num_updates"]) == 1 and len(rows) == 40
    assert float(rows[0]["loss"]) < float(plain_last["loss"]) + 0.5
    assert float(rows[0]["loss"]) < float(json_logs(plain.stdout)[0]["loss"]) - 1.0
    # without --reset-optimizer fairseq names the flag to use
    again = run(train_cmd(tiny_corpus, tmp_path / "guided2", "--optimizer", "guided_adam", "--lr", "0.005",
                          "--max-update", "40", "--restore-file", tmp_path / "plain" / "checkpoint_last.pt"))
    assert again.returncode != 0 and "--reset-optimizer" in again.stdout


def test_checkpoint_with_a_foreign_object_is_refused(tiny_corpus, tmp_path):
    from fairseq import checkpoint_utils

    out = run(train_cmd(tiny_corpus, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.005",
                        "--guided-hparams", "alpha", "--max-update", "3"))
    assert out.returncode == 0, out.stdout[-2000:]
    path = tmp_path / "ckpt" / "checkpoint_last.pt"
    assert checkpoint_utils.load_checkpoint_to_cpu(str(path))["model"]  # the real one loads
    state = torch.load(path, weights_only=True)
    state["extra_state"]["payload"] = subprocess.CompletedProcess(args=[], returncode=0)
    torch.save(state, tmp_path / "tampered.pt")
    with pytest.raises(Exception, match="CompletedProcess"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "tampered.pt"))


def test_guidance_split_smaller_than_one_batch(tiny_corpus, tmp_path):
    from conftest import binarize, write_cipher_corpus

    raw = tmp_path / "raw"
    raw.mkdir()
    write_cipher_corpus(raw, {"train": 300, "valid": 20, "test": 20, "guide": 3}, seed=3)
    binarize(raw, tmp_path / "bin")
    out = run(train_cmd(tmp_path / "bin", tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.005",
                        "--guided-hparams", "alpha", "--max-update", "5", "--guidance-refresh", "step"))
    assert out.returncode == 0, out.stdout[-2000:]
    assert "guidance batch: 3 sentences" in out.stdout and "(3 examples of 'guide')" in out.stdout
    assert len({r["guided_alpha"] for r in json_logs(out.stdout)}) > 1
