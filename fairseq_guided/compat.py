"""Narrow shims for fairseq-fixed 0.12.3.1 on torch >= 2.6. Each has a test in
tests/test_compat.py (and the fault tests of tests/test_faults_*.py).

- torch.load now defaults to weights_only=True, and fairseq's checkpoint loader does not
  pass weights_only. Instead of switching the safety off, allow the few non-tensor types a
  fairseq checkpoint holds; anything else in a checkpoint is still refused by torch.
- fairseq writes the first checkpoint file of a save atomically (.tmp, then rename) but
  copies it to checkpoint_last.pt / checkpoint_best.pt in place: a kill during the copy
  leaves a truncated file. The copy in checkpoint_utils is made atomic the same way.
- fairseq's NanDetector (run after a NaN/Inf gradient to say where it arose) registers
  torch's deprecated non-full backward hook on every module; on torch 2.13 a module whose
  output is a dict without a tensor value (fairseq's encoder) makes torch's hook set-up
  raise StopIteration, which replaces fairseq's "gradients are Nan/Inf" report. Its
  backward check is attached to the output tensors instead.
- fairseq prefetches batches in a daemon thread (BufferedIterator's BackgroundConsumer).
  When fairseq-train ends while that thread is inside torch (collating the next batch,
  the GIL released), Python's finalization stops it with pthread_exit as it takes the
  GIL back; the forced unwind crosses torch's noexcept C++ frames and the process aborts
  ("terminate called without an active exception", exit -6) after a run that finished.
  Short runs and runs that end just after an epoch starts hit it. At exit the threads are
  told to stop after the batch in hand, and drained until they end.
- A checkpoint write that fails (a full disk: OSError errno 28) raised an error that named
  no file (fairseq's retries, writing again into the same half-written handle, add
  "unexpected pos ... vs ..."), and left the partial .tmp on the full disk. The write of
  the checkpoint file (fairseq's torch_persistent_save) and the atomic copy above now
  remove their partial .tmp and raise an OSError of the same errno naming the file.
- A data-parallel resume: rank 0 loads the checkpoint and broadcasts it
  (distributed_utils.broadcast_object), and the other ranks torch.load what they receive
  with weights_only=True: the state's cfg is an omegaconf DictConfig there (fairseq's
  load_checkpoint_to_cpu makes it one) and its tensors are fairseq's placeholders, which
  were refused ("Unsupported global: GLOBAL omegaconf.dictconfig.DictConfig"), so a
  multi-worker run could not resume with its own command. The load of that broadcast,
  and only it, also allows the few types such a state holds (broadcast_state_globals()).
"""
from __future__ import annotations

import argparse
import atexit
import collections
import errno
import functools
import os
import queue
import shutil
import threading
import time

import numpy
import torch

# What fairseq-train writes into a checkpoint besides tensors and builtins: the legacy
# args Namespace (None in new checkpoints, present in old ones) and the ordered dicts of
# fairseq's metrics state.
FAIRSEQ_CHECKPOINT_GLOBALS = [argparse.Namespace, collections.OrderedDict]
# With --eval-bleu, fairseq's translation task logs its n-gram counts as numpy arrays, which
# the metrics state in the checkpoint keeps: numpy arrays and scalars of these dtypes.
NUMPY_CHECKPOINT_GLOBALS = [numpy._core.multiarray._reconstruct, numpy._core.multiarray.scalar, numpy.ndarray,
                            numpy.dtype, *(type(numpy.dtype(t)) for t in ("int64", "int32", "float64", "float32"))]


def allow_fairseq_checkpoint_types() -> None:
    torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS + NUMPY_CHECKPOINT_GLOBALS)


# -- atomic checkpoint copies ---------------------------------------------------------------
def atomic_copy(src: str, dst: str) -> None:
    """Copy src to dst so that dst is always either its old content or the whole of src:
    write dst.tmp (as fairseq's own atomic save does), flush it to disk, then rename."""
    tmp = dst + ".tmp"
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise _naming_the_file(e, f"cannot copy {src} to {dst}", f"the partial {tmp} was removed") from e
        raise


class _AtomicCopyPathManager:
    """fairseq's PathManager as checkpoint_utils sees it, with copy() of local files made
    atomic; every other call (and any remote path) goes to fairseq's own."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def copy(self, src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        local = "://" not in str(src_path) and "://" not in str(dst_path)
        if not local or (not overwrite and os.path.exists(dst_path)):
            return self._inner.copy(src_path, dst_path, overwrite)
        atomic_copy(str(src_path), str(dst_path))
        return True


def make_checkpoint_copies_atomic() -> None:
    from fairseq import checkpoint_utils

    if not isinstance(checkpoint_utils.PathManager, _AtomicCopyPathManager):
        checkpoint_utils.PathManager = _AtomicCopyPathManager(checkpoint_utils.PathManager)


# -- fairseq's NaN detector on torch 2.13 ---------------------------------------------------
def _tensors(x):
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


def _nan_detector_add_hooks(self, module):
    if self.forward:
        self.fhooks.append(module.register_forward_hook(self.fhook_fn))
    if self.backward:
        self.bhooks.append(module.register_forward_hook(self._watch_output_grads))


def _nan_detector_watch_output_grads(self, module, inp, output):
    # what the non-full backward hook reported: the gradient of the module's output
    def check(grad):
        if not self.has_printed_b:
            self._apply(module, None, grad, backward=True)

    for t in _tensors(output):
        if t.requires_grad:
            t.register_hook(check)


def fix_nan_detector() -> None:
    from fairseq.nan_detector import NanDetector

    NanDetector.add_hooks = _nan_detector_add_hooks
    NanDetector._watch_output_grads = _nan_detector_watch_output_grads


# -- fairseq's prefetch threads at interpreter exit -----------------------------------------
def stop_prefetch_threads(timeout: float = 60.0) -> int:
    """End fairseq's live prefetch threads: each stops after the batch it is making, and
    its queue is drained so that it is never left blocked in put(). Returns how many were
    stopped; a thread still busy after `timeout` seconds is left as it is."""
    from fairseq.data.iterators import BackgroundConsumer

    deadline = time.monotonic() + timeout
    stopped = 0
    for thread in threading.enumerate():
        if not isinstance(thread, BackgroundConsumer) or not thread.is_alive():
            continue
        thread._max_len = 0  # its loop breaks after its next put()
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                thread._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        stopped += not thread.is_alive()
    return stopped


def stop_prefetch_threads_at_exit() -> None:
    # atexit handlers run before finalization starts stopping daemon threads
    atexit.unregister(stop_prefetch_threads)
    atexit.register(stop_prefetch_threads)


# -- a failed checkpoint write names its file ------------------------------------------------
def _os_error_in(e: BaseException):
    """The first OSError with an errno in e's chain (torch's zip writer reports a failed
    write as RuntimeError 'unexpected pos', with the OSError as its context)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _naming_the_file(e: OSError, what: str, cleanup: str) -> OSError:
    full = " (the disk is full)" if e.errno == errno.ENOSPC else ""
    return OSError(e.errno, f"{what}: {e.strerror or e}{full}; {cleanup}; the checkpoints written before "
                            f"are unchanged: free space and resume with the same command")


def name_failed_checkpoint_writes() -> None:
    """Wrap fairseq's torch_persistent_save (the write of each save's first checkpoint
    file, as FILE.tmp then a rename): when it fails on a local file, remove the partial
    FILE.tmp and raise an OSError naming FILE. A .tmp that reads back whole (the rename
    failed) is kept and named. Any other path (remote, asynchronous, a file object) goes
    to fairseq's own unchanged."""
    from fairseq import checkpoint_utils

    original = checkpoint_utils.torch_persistent_save
    if getattr(original, "_fairseq_guided", False):
        return

    @functools.wraps(original)
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if not isinstance(filename, str) or async_write or "://" in filename:
            return original(obj, filename, async_write)
        try:
            return original(obj, filename, async_write)
        except Exception as e:
            tmp = filename + ".tmp"
            cleanup = f"no partial {tmp} was left"
            if os.path.exists(tmp):
                from .preflight import checkpoint_problem

                if checkpoint_problem(tmp) is None:
                    cleanup = f"{tmp} reads back whole and was kept"
                else:
                    os.remove(tmp)
                    cleanup = f"the partial {tmp} was removed"
            cause = _os_error_in(e)
            if cause is None:
                e.add_note(f"while writing the checkpoint {filename}; {cleanup}")
                raise
            raise _naming_the_file(cause, f"cannot write the checkpoint {filename}", cleanup) from e

    torch_persistent_save._fairseq_guided = True
    checkpoint_utils.torch_persistent_save = torch_persistent_save


# -- a data-parallel resume: the state rank 0 broadcasts -------------------------------------
def broadcast_state_globals() -> list:
    """What the checkpoint state broadcast on a resume holds besides the checkpoint's own
    types (allowed above): the cfg as an omegaconf DictConfig (its nodes, metadata, and the
    types the metadata names: dict, list, int, typing.Any) and fairseq's placeholders for
    the tensors, which are broadcast apart."""
    import typing

    from fairseq.distributed.utils import _TensorPlaceholder
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, collections.defaultdict,
            typing.Any, dict, list, int, _TensorPlaceholder]


def allow_broadcast_resume_state() -> None:
    """fairseq's _broadcast_object_slow (the pickled part of broadcast_object) with those
    types allowed while it runs; every other torch.load keeps the checkpoint list."""
    from fairseq.distributed import utils as dist_utils

    original = dist_utils._broadcast_object_slow
    if getattr(original, "_fairseq_guided", False):
        return

    @functools.wraps(original)
    def _broadcast_object_slow(obj, src_rank, group, dist_device):
        with torch.serialization.safe_globals(broadcast_state_globals()):
            return original(obj, src_rank, group, dist_device)

    _broadcast_object_slow._fairseq_guided = True
    dist_utils._broadcast_object_slow = _broadcast_object_slow
