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
"""
from __future__ import annotations

import argparse
import atexit
import collections
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
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
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
