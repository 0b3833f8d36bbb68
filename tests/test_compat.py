"""Each shim of fairseq_guided.compat, tested."""
import argparse
import collections

import pytest
import torch

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
