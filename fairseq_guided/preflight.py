"""What fairseq-train checks once before training, with this plugin loaded.

Installed (channels.install) by wrapping `fairseq.checkpoint_utils.load_checkpoint`, the
one call fairseq_cli.train makes after building the trainer and before the first update
(it has the whole config and the trainer). Only for a guided run (a guided task or optimizer): a
stock run with the plugin imported gets fairseq's own load_checkpoint and nothing else,
for any config fairseq accepts. For a guided run:
- a lock on --save-dir, so that a second run on the same directory is refused (naming the
  holder's PID) instead of interleaving its checkpoints with the first;
- a guided optimizer that learns values under a task without the guidance step (it would
  learn nothing and say nothing);
- the checkpoint it resumes from is verified before loading: a torch checkpoint is a zip
  file whose every record carries a CRC32, so a truncated or bit-flipped file is refused,
  naming it, instead of loading garbage that shows up updates later as NaN;
- learned state in it that cannot be resumed (hypergrad.hyperparams.LearnedStateError) is
  refused naming the file, and --reset-optimizer, which drops the learned values, says so.

A resume whose checkpoint_last.pt is unreadable stops and names the newest readable
checkpoint; it never falls back on its own: silently redoing updates from an older file
would hide a failing disk and change a guided run's trajectory without the user knowing.
So does a resume with no checkpoint_last.pt in a --save-dir that holds other checkpoints
(a kill or a full disk during the first save, after checkpoint_1_N.pt was written but
before its copy to checkpoint_last.pt): fairseq would start afresh at update 1 and
overwrite them.
"""
from __future__ import annotations

import fcntl
import functools
import glob
import logging
import os
import zipfile

import torch

from .hypergrad.hyperparams import LearnedStateError

logger = logging.getLogger(__name__)

LOCK_NAME = ".fairseq_guided.lock"
_held_locks = {}  # save dir -> open lock file, held (flock) for the life of the process


class CheckpointError(RuntimeError):
    pass


# -- the --save-dir lock ------------------------------------------------------------------
def lock_save_dir(save_dir: str) -> None:
    """Take an exclusive flock on SAVE_DIR/.fairseq_guided.lock for this process's life.
    The kernel drops it when the holder dies, so a lock left by a killed run never blocks."""
    save_dir = os.path.abspath(save_dir)
    if save_dir in _held_locks:
        return
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, LOCK_NAME)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise CheckpointError(
            f"--save-dir {save_dir} is in use by another training run (PID {holder}, lock "
            f"{path}); two runs in one directory would overwrite each other's checkpoints. "
            f"Wait for it, stop it, or choose another --save-dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks[save_dir] = f


# -- verifying checkpoints ----------------------------------------------------------------
def checkpoint_problem(path: str):
    """None if the file at path reads back whole, else why not (a short phrase)."""
    try:
        if os.path.getsize(path) == 0:
            return "is empty (0 bytes)"
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                if f.read(2) == b"\x80\x02":
                    return None  # torch's legacy (pre-1.6) pickle format: no CRCs to check
            return "is not a complete torch checkpoint (no zip directory: truncated?)"
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            return f"is corrupted (record {bad} fails its CRC32 check)"
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError) as e:
        return f"cannot be read ({type(e).__name__}: {e})"
    return None


def _num_updates(path: str):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state["optimizer_history"][-1]["num_updates"]
    except Exception:
        return None


def newest_readable_checkpoint(save_dir: str, suffix: str = "", exclude=()):
    """(path, num_updates) of the newest checkpoint in save_dir that verifies, or None."""
    paths = [p for p in glob.glob(os.path.join(save_dir, f"checkpoint*{suffix}.pt"))
             if os.path.abspath(p) not in {os.path.abspath(e) for e in exclude}]
    for path in sorted(paths, key=lambda p: (os.path.getmtime(p), p), reverse=True):
        if checkpoint_problem(path) is None:
            updates = _num_updates(path)
            if updates is not None:
                return path, updates
    return None


def resume_path(cfg, suffix: str):
    """The checkpoint fairseq's load_checkpoint will read, and whether it is the default
    checkpoint_last.pt (fairseq starts afresh when that one is absent); (None, ...) when
    the config names none this can find (fairseq's own load reports on such configs)."""
    restore, save_dir = getattr(cfg, "restore_file", None), getattr(cfg, "save_dir", None)
    if not isinstance(restore, str):
        return None, False
    if restore == "checkpoint_last.pt":
        last = os.path.join(save_dir, f"checkpoint_last{suffix}.pt") if isinstance(save_dir, str) else None
        if last is not None and os.path.exists(last):
            return last, True
        for other in (getattr(cfg, "continue_once", None), getattr(cfg, "finetune_from_model", None)):
            if other:
                return other, False
        return None, True
    return restore.replace(".pt", suffix + ".pt") if suffix else restore, False


def resume_advice(save_dir: str, suffix: str, last: str, damaged: bool = False):
    """How to resume from the newest readable checkpoint of save_dir other than `last`
    (the checkpoint_last.pt there, moved aside first when `damaged`), or None."""
    newest = newest_readable_checkpoint(save_dir, suffix, exclude=[last])
    if newest is None:
        return None
    good, updates = newest
    move = f"mv {last} {last}.bad && " if damaged else ""
    return (f"the newest readable checkpoint is {good} (update {updates}). To resume from it: "
            f"{move}cp {good} {last} (or pass --restore-file {good})")


def refuse_restart_over_checkpoints(cfg, suffix: str = "") -> None:
    """No checkpoint_last.pt, so fairseq would start afresh at update 1: refuse when the
    save dir holds other checkpoints (the first save was cut off after its first file),
    naming the newest readable one and how to resume from it."""
    save_dir = getattr(cfg, "save_dir", None)
    if not isinstance(save_dir, str) or getattr(cfg, "no_save", False) is True:
        return  # --no-save writes nothing: a fresh start overwrites nothing
    found = sorted(glob.glob(os.path.join(save_dir, f"checkpoint*{suffix}.pt")))
    if not found:
        return  # a first launch
    last = os.path.join(save_dir, f"checkpoint_last{suffix}.pt")
    advice = resume_advice(save_dir, suffix, last)
    if advice is None:
        advice = (f"none of them reads back whole ({', '.join(os.path.basename(f) for f in found)}); "
                  f"move them aside (or choose another --save-dir) to start afresh")
    else:
        advice += "; to start afresh instead, move the checkpoints aside or choose another --save-dir"
    raise CheckpointError(
        f"there is no {last} to resume from, but {save_dir} holds {len(found)} other checkpoint file(s) "
        f"(a run stopped during its first save?); fairseq would start afresh at update 1 and overwrite "
        f"them; nothing was loaded: {advice}")


def verify_resume_checkpoint(cfg, suffix: str = "") -> None:
    path, is_last = resume_path(cfg, suffix)
    if path is None and is_last:
        refuse_restart_over_checkpoints(cfg, suffix)
        return
    if path is None or not os.path.exists(path):
        return  # fairseq's own "not found" handling
    problem = checkpoint_problem(path)
    if problem is None:
        return
    if not is_last:
        raise CheckpointError(f"the checkpoint to resume from, {path}, {problem}; nothing was loaded")
    advice = resume_advice(cfg.save_dir, suffix, path, damaged=True) or (
        f"there is no readable checkpoint in {cfg.save_dir}; move {path} aside to start afresh")
    raise CheckpointError(f"{path} {problem}; nothing was loaded: {advice}")


# -- learned values under a task that never learns them -----------------------------------
def check_task_learns(cfg, task) -> None:
    from .guidance.task import GuidedTaskMixin

    opt = cfg.optimizer
    name = str(getattr(opt, "_name", "") or "")
    hparams = str(getattr(opt, "guided_hparams", "") or "").strip()
    if name.startswith("guided_") and hparams and not isinstance(task, GuidedTaskMixin):
        raise ValueError(
            f"--guided-hparams {hparams!r} with --task {cfg.task._name}: that task has no guidance "
            f"step, so --optimizer {name} would learn nothing. Use --task guided_translation or "
            f"guided_span_corruption, or drop --guided-hparams")


def is_guided_run(trainer) -> bool:
    from .guidance.task import GuidedTaskMixin

    name = getattr(getattr(trainer.cfg, "optimizer", None), "_name", None)
    return isinstance(trainer.task, GuidedTaskMixin) or (isinstance(name, str) and name.startswith("guided_"))


def say_learned_values_reset(cfg, trainer, path) -> None:
    hparams = str(getattr(getattr(trainer.cfg, "optimizer", None), "guided_hparams", "") or "").strip()
    if not hparams or path is None or not os.path.exists(path):
        return
    if getattr(cfg, "reset_optimizer", False):
        flag = "--reset-optimizer"
    elif path == getattr(cfg, "finetune_from_model", None):
        flag = "--finetune-from-model (it resets the optimizer)"
    else:
        return
    logger.warning(f"{flag}: the learned values ({hparams}) and their meta-optimizer state start "
                   f"afresh from their initial values; those in {path} are not loaded")


def before_training(cfg, trainer) -> None:
    check_task_learns(trainer.cfg, trainer.task)
    save_dir = getattr(cfg, "save_dir", None)
    if trainer.should_save_checkpoint_on_current_rank and not getattr(cfg, "no_save", False) \
            and isinstance(save_dir, str):
        lock_save_dir(save_dir)
    verify_resume_checkpoint(cfg, trainer.checkpoint_suffix)
    say_learned_values_reset(cfg, trainer, resume_path(cfg, trainer.checkpoint_suffix)[0])


def install() -> None:
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint
    if getattr(original, "_fairseq_guided", False):
        return

    @functools.wraps(original)
    def load_checkpoint(cfg, trainer, **passthrough_args):
        if not is_guided_run(trainer):
            return original(cfg, trainer, **passthrough_args)
        before_training(cfg, trainer)
        try:
            return original(cfg, trainer, **passthrough_args)
        except LearnedStateError as e:
            path = resume_path(cfg, trainer.checkpoint_suffix)[0] or "the checkpoint"
            raise CheckpointError(f"cannot resume from {path}: {e}") from None

    load_checkpoint._fairseq_guided = True
    checkpoint_utils.load_checkpoint = load_checkpoint
