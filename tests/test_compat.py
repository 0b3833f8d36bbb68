"""Each shim of fairseq_guided.compat, tested (the atomic checkpoint copy also in
test_faults_checkpoints.py)."""
import argparse
import collections
import signal
import sys
import time
from pathlib import Path

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


# A process that exits while fairseq's prefetch thread is inside torch: it makes each batch
# with matrix products (the GIL released), so at exit the thread is nearly always there.
EXIT_WHILE_PREFETCHING = """
import sys
import torch
from fairseq.data.iterators import BufferedIterator
torch.set_num_threads(1)

class Batches:
    def __len__(self):
        return 10 ** 6

    def __iter__(self):
        while True:
            a = torch.randn(300, 300)
            for _ in range(50):
                a = a @ a / 300.0
            yield a

batches = BufferedIterator(2, Batches())
next(batches)
if sys.argv[1] == "with-shim":
    sys.path.insert(0, sys.argv[2])
    import fairseq_guided  # noqa: F401 (installs the exit hook)
print("training done", flush=True)
"""


def test_an_exit_while_fairseq_prefetches_is_clean(tmp_path):
    script = tmp_path / "exit_while_prefetching.py"
    script.write_text(EXIT_WHILE_PREFETCHING)
    plugin_parent = str(Path(compat.__file__).resolve().parents[1])
    stock = []
    for _ in range(3):  # the breakage the shim is for (3 tries: the thread may be between two products)
        stock.append(run([sys.executable, script, "stock"]))
        if stock[-1].returncode == -signal.SIGABRT and "terminate called" in stock[-1].stdout:
            break
    else:
        raise AssertionError([(o.returncode, o.stdout[-300:]) for o in stock])
    for _ in range(2):
        out = run([sys.executable, script, "with-shim", plugin_parent])
        assert out.returncode == 0 and out.stdout.strip().endswith("training done"), out.stdout[-2000:]


def test_stop_prefetch_threads_ends_a_consumer_blocked_on_a_full_queue():
    from fairseq.data.iterators import BufferedIterator

    batches = BufferedIterator(2, list(range(100)))
    assert next(batches) == 0
    consumer = batches._consumer
    deadline = time.monotonic() + 30
    while not batches._queue.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batches._queue.full() and consumer.is_alive()  # blocked in put()
    assert compat.stop_prefetch_threads() == 1
    assert not consumer.is_alive()
    assert compat.stop_prefetch_threads() == 0
