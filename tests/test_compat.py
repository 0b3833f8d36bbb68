"""Each shim of fairseq_guided.compat, tested (the atomic checkpoint copy also in
test_faults_checkpoints.py)."""
import argparse
import builtins
import collections
import errno
import re
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


def test_a_full_disk_during_a_checkpoint_write_names_the_file_and_leaves_no_partial(tmp_path, monkeypatch):
    """fairseq's save of a checkpoint's first file (FILE.tmp, then a rename) on a disk that
    fills after 1000 bytes: an OSError errno 28 naming FILE, the partial FILE.tmp removed
    (fairseq's own retries wrote again into the same half-written file)."""
    from fairseq import checkpoint_utils

    from launchers.full_disk import filling_open

    path = tmp_path / "checkpoint_1_5.pt"
    monkeypatch.setattr(builtins, "open", filling_open("checkpoint_1_5.pt.tmp", 1000))
    with pytest.raises(OSError) as raised:
        checkpoint_utils.torch_persistent_save({"model": {"w": torch.zeros(20000)}}, str(path))
    assert raised.value.errno == errno.ENOSPC
    assert f"cannot write the checkpoint {path}: No space left on device (the disk is full); " \
           f"the partial {path}.tmp was removed" in str(raised.value)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(builtins, "open", filling_open("checkpoint_1_5.pt.tmp", 10 ** 9))  # space again
    checkpoint_utils.torch_persistent_save({"model": {"w": torch.ones(3)}}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_1_5.pt"]


def test_a_full_disk_during_the_atomic_copy_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    from launchers.full_disk import filling_open

    src, dst = tmp_path / "checkpoint_1_10.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"n" * 5000)
    dst.write_bytes(b"old")
    monkeypatch.setattr(builtins, "open", filling_open("checkpoint_last.pt.tmp", 1000))
    with pytest.raises(OSError) as raised:
        compat.atomic_copy(str(src), str(dst))
    assert raised.value.errno == errno.ENOSPC
    assert f"cannot copy {src} to {dst}: No space left on device (the disk is full); " \
           f"the partial {dst}.tmp was removed" in str(raised.value)
    assert dst.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, src.name])


def test_the_state_broadcast_on_a_resume_loads_with_its_types_and_only_there():
    """What rank 0 broadcasts on a data-parallel resume, made as fairseq makes it: the
    checkpoint's cfg (a plain dict on disk) as load_checkpoint_to_cpu turns it into a
    DictConfig, the tensors taken out by broadcast_object. torch.load refuses it; with
    broadcast_state_globals() it reads back equal (the end-to-end resume:
    tests/test_distributed.py); outside the broadcast the checkpoint list is unchanged."""
    import io

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as dist_utils
    from omegaconf import DictConfig, OmegaConf

    from conftest import PLUGIN, TINY_MODEL

    args = options.parse_args_and_arch(options.get_training_parser(), [
        "data-bin", "--user-dir", PLUGIN, "--task", "guided_translation", *TINY_MODEL, "--optimizer", "guided_adam",
        "--lr", "0.005", "--guided-hparams", "alpha,beta1", "--max-tokens", "1000"])
    on_disk = OmegaConf.to_container(convert_namespace_to_omegaconf(args), resolve=True, enum_to_str=True)
    state = {"cfg": OmegaConf.create(on_disk, flags={"allow_objects": True}), "args": None,
             "model": {"w": torch.arange(6.0).reshape(2, 3)},
             "last_optimizer_state": {"guided_hyper": {"names": ["alpha", "beta1"],
                                                       "raw": torch.tensor([0.0, 2.2], dtype=torch.float64)}},
             "extra_state": {"metrics": collections.OrderedDict(), "train_iterator": {"epoch": 1}}}
    tensors = []
    sent = dist_utils._split_tensors_from_obj(state, tensors)
    buffer = io.BytesIO()
    torch.save(sent, buffer)
    with pytest.raises(Exception, match="omegaconf.dictconfig.DictConfig"):
        torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu")  # the breakage the shim is for
    with torch.serialization.safe_globals(compat.broadcast_state_globals()):
        received = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu")
    back = dist_utils._put_tensors_in_obj(received, tensors)
    assert isinstance(back["cfg"], DictConfig) and back["cfg"] == state["cfg"]
    assert back["cfg"].optimizer.guided_hparams == "alpha,beta1" and back["cfg"].optimization.lr == [0.005]
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert torch.equal(back["last_optimizer_state"]["guided_hyper"]["raw"], torch.tensor([0.0, 2.2], dtype=torch.float64))
    with pytest.raises(Exception, match="omegaconf.dictconfig.DictConfig"):
        torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu")  # only inside the broadcast
    assert dist_utils._broadcast_object_slow._fairseq_guided  # installed by importing the plugin


def test_a_nan_loss_ends_in_fairseqs_own_report(tiny_corpus, tmp_path):
    """An lr of 1e38 overflows the first update: fairseq re-runs the batch under its
    NanDetector, which on torch 2.13 raised StopIteration before the shim."""
    out = run(train_cmd(tiny_corpus, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "1e38",
                        "--guided-hparams", "alpha", "--warmup-updates", "1", "--max-update", "10"))
    assert out.returncode != 0
    assert "StopIteration" not in out.stdout, out.stdout[-3000:]
    assert "FloatingPointError: gradients are Nan/Inf" in out.stdout
    assert "NaN detected in output of" in out.stdout  # the detector ran and said where
    # its backward check too, which the shim attaches to the output tensors
    assert re.search(r"NaN detected in output of \S+, shape: torch.Size\(\[[0-9, ]+\]\), backward", out.stdout), \
        out.stdout[-3000:]


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
