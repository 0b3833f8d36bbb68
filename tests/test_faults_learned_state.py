"""Issue 25, item 3: a learned value never becomes non-finite, and a checkpoint whose learned
state is not finite or not of this run's shape is refused at load, naming the file and the
entry, before any update. The meta lr of 1e9 made alpha inf at update 2 (exp of a raw value
near 1e9), which the update-3 checkpoint kept and the next update turned into NaN weights."""
import math

import pytest
import torch

import fairseq_guided  # noqa: F401 (safe globals for torch.load of fairseq checkpoints)
from conftest import json_logs, run, train_cmd

FLAGS = ["--optimizer", "guided_adam", "--lr", "0.001", "--guided-hparams", "alpha,beta1",
         "--save-interval-updates", "3", "--batch-size", "32", "--max-update", "6"]
WILD, TAME = [*FLAGS, "--guided-meta-lr", "1e9"], [*FLAGS, "--guided-meta-lr", "0.01"]


@pytest.fixture(scope="module")
def wild(tiny_corpus, tmp_path_factory):
    save = tmp_path_factory.mktemp("wild")
    return save, run(train_cmd(tiny_corpus, save, *WILD))


@pytest.fixture(scope="module")
def tame(tiny_corpus, tmp_path_factory):
    """Checkpoints at updates 3 and 6 of a run whose learned state is whole, to damage."""
    save = tmp_path_factory.mktemp("tame")
    out = run(train_cmd(tiny_corpus, save, *TAME))
    assert out.returncode == 0, out.stdout[-2000:]
    return save


def test_meta_steps_that_would_make_a_value_non_finite_are_skipped_and_counted(wild):
    save, out = wild
    assert out.returncode == 0, out.stdout[-2000:]
    rows = json_logs(out.stdout)
    assert [int(r["num_updates"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:
        assert all(math.isfinite(float(row[f"guided_{name}"])) for name in ("alpha", "beta1")), row
    assert float(rows[-1]["meta_skipped"]) > 0
    assert float(rows[-1]["hgrad_nonfinite"]) == 0  # the hypergradients were finite: the steps were not
    checkpoints = sorted(save.glob("checkpoint*.pt"))
    assert [c.name for c in checkpoints] == ["checkpoint_1_3.pt", "checkpoint_1_6.pt", "checkpoint_best.pt",
                                             "checkpoint_last.pt"]
    for path in checkpoints:
        state = torch.load(path, weights_only=True)
        hyper = state["last_optimizer_state"]["guided_hyper"]
        for key, value in hyper.items():
            assert not torch.is_tensor(value) or torch.isfinite(value).all(), (path.name, key, value)
        assert hyper["skipped_count"].sum() > 0
        assert all(torch.isfinite(w).all() for w in state["model"].values()), path.name


def edit(hyper, state, damage):
    if damage == "nan-raw":
        hyper["raw"][0] = float("nan")
    elif damage == "nan-exp_avg":
        hyper["exp_avg"][1] = float("nan")
    elif damage == "negative-exp_avg_sq":
        hyper["exp_avg_sq"][0] = -1.0
    elif damage == "zero-steepness":
        hyper["steepness"] = torch.zeros_like(hyper["steepness"])
    elif damage == "raw-shape-(1,)":
        hyper["raw"] = hyper["raw"][:1].clone()
    elif damage == "raw-0-d":
        hyper["raw"] = hyper["raw"][0].clone()
    elif damage == "raw-shape-(3,)":
        hyper["raw"] = torch.cat([hyper["raw"], hyper["raw"][:1]])
    elif damage == "no-raw":
        del hyper["raw"]
    else:
        del state["last_optimizer_state"]["guided_hyper"]


DAMAGES = {"nan-raw": "guided_hyper['raw'] is not finite",
           "nan-exp_avg": "guided_hyper['exp_avg'] is not finite",
           "negative-exp_avg_sq": "guided_hyper['exp_avg_sq'] has a negative entry",
           "zero-steepness": "guided_hyper['steepness'] is not > 0",
           "raw-shape-(1,)": "guided_hyper['raw'] has shape (1,), but this run learns alpha, beta1 (shape (2,))",
           "raw-0-d": "guided_hyper['raw'] has shape (), but this run learns alpha, beta1 (shape (2,))",
           "raw-shape-(3,)": "guided_hyper['raw'] has shape (3,), but this run learns alpha, beta1 (shape (2,))",
           "no-raw": "guided_hyper['raw'] is missing",
           "no-guided_hyper": "the optimizer state has no guided_hyper entry, but this run learns alpha, beta1"}


def damaged_copy(tame, tmp_path, damage):
    """A save dir whose checkpoint_last.pt is the update-3 checkpoint with its learned state
    edited: resumed with the same command, updates 4 to 6 would run from it."""
    save = tmp_path / "ckpt"
    save.mkdir()
    last = save / "checkpoint_last.pt"
    state = torch.load(tame / "checkpoint_1_3.pt", weights_only=True)
    edit(state["last_optimizer_state"].get("guided_hyper"), state, damage)
    torch.save(state, last)
    return save, last


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_checkpoint_with_bad_learned_state_is_refused_naming_file_and_entry(tiny_corpus, tame, tmp_path,
                                                                            damage):
    save, last = damaged_copy(tame, tmp_path, damage)
    before = last.read_bytes()
    out = run(train_cmd(tiny_corpus, save, *TAME))
    assert out.returncode != 0 and "num_updates" not in out.stdout, out.stdout[-2000:]
    message = out.stdout.strip().splitlines()[-1]  # one message, the last line: the file and the entry
    assert f"cannot resume from {last}: {DAMAGES[damage]}" in message, out.stdout[-2000:]
    assert out.stdout.count("Traceback") == 1
    assert last.read_bytes() == before


def test_reset_optimizer_says_the_learned_values_start_afresh(tiny_corpus, tame, tmp_path):
    save, last = damaged_copy(tame, tmp_path, "nan-raw")
    out = run(train_cmd(tiny_corpus, save, *TAME, "--reset-optimizer"))
    assert out.returncode == 0, out.stdout[-2000:]
    assert (f"--reset-optimizer: the learned values (alpha,beta1) and their meta-optimizer state start "
            f"afresh from their initial values; those in {last} are not loaded") in out.stdout
    # fairseq's --reset-optimizer also restarts the update count
    rows = json_logs(out.stdout)
    assert [int(r["num_updates"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[0]["guided_alpha"]) == 1.0  # the initial value, not the checkpoint's NaN
