"""Narrow shims for fairseq-fixed 0.12.3.1 on torch >= 2.6. Each has a test in
tests/test_compat.py.

torch.load now defaults to weights_only=True, and fairseq's checkpoint loader does not pass
weights_only. Instead of switching the safety off, allow the few non-tensor types a fairseq
checkpoint holds; anything else in a checkpoint is still refused by torch.
"""
from __future__ import annotations

import argparse
import collections

import torch

# What fairseq-train writes into a checkpoint besides tensors and builtins: the legacy
# args Namespace (None in new checkpoints, present in old ones) and the ordered dicts of
# fairseq's metrics state.
FAIRSEQ_CHECKPOINT_GLOBALS = [argparse.Namespace, collections.OrderedDict]


def allow_fairseq_checkpoint_types() -> None:
    torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)
