"""Each shim of fairseq_guided.compat, tested (the atomic checkpoint copy also in
test_faults_checkpoints.py)."""
import argparse
import collections

import pytest
import torch

from conftest import run, train_cmd
from fairseq_guided import compat


class NotAFairseqType:
    pass


def test_checkpoint_types_load_with_weights_only_and_nothing_else_does(tmp_path):
    checkpoint = {"args": argparse.Namespace(arch="transformer"),
                  "extra_state": {"metrics": collections.OrderedDict(train={"loss": 1.0})},
                  "model": {"w": torch.ones(2)}}
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(Exception, match="argparse.Namespace"):
            torch.load(path, weights_only=True)  # the breakage the shim is for
        compat.allow_fairseq_checkpoint_types()
        loaded = torch.load(path, weights_only=True)
        assert loaded["args"].arch == "transformer" and torch.equal(loaded["model"]["w"], torch.ones(2))

        torch.save({"model": {}, "payload": NotAFairseqType()}, tmp_path / "other.pt")
        with pytest.raises(Exception, match="NotAFairseqType"):  # still refused
            torch.load(tmp_path / "other.pt", weights_only=True)
    finally:
        compat.allow_fairseq_checkpoint_types()


def test_a_nan_loss_ends_in_fairseqs_own_report(tiny_corpus, tmp_path):
    """An lr of 1e38 overflows the first update: fairseq re-runs the batch under its
    NanDetector, which on torch 2.13 raised StopIteration before the shim."""
    out = run(train_cmd(tiny_corpus, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "1e38",
                        "--guided-hparams", "alpha", "--warmup-updates", "1", "--max-update", "10"))
    assert out.returncode != 0
    assert "StopIteration" not in out.stdout, out.stdout[-3000:]
    assert "FloatingPointError: gradients are Nan/Inf" in out.stdout
    assert "NaN detected in output of" in out.stdout  # the detector ran and said where
