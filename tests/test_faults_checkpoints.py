"""Issue 15, cases 1, 2 and 6: checkpoints survive a kill during a save, a damaged
checkpoint is refused before training naming the file (and the newest readable one), and
a second run on a --save-dir in use is refused naming the holder's PID. Each fault is
injected at a known point (a copy that kills its own process, bytes flipped at a known
offset, a lock held by this process), never by timing."""
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import fairseq_guided  # noqa: F401 (safe globals for torch.load of fairseq checkpoints)
from conftest import ENV, REPO, json_logs, run, train_cmd
from fairseq_guided import compat, preflight

FLAGS = ["--optimizer", "guided_adam", "--lr", "0.005", "--guided-hparams", "alpha",
         "--save-interval-updates", "5", "--batch-size", "32"]

# fairseq-train in a child whose copy of checkpoint_1_10.pt to checkpoint_last.pt writes
# 1000 bytes and then SIGKILLs the process: the kill lands inside the copy, every time.
KILL_DURING_COPY = r"""
import os, shutil, signal, sys
real = shutil.copyfileobj
def copy_then_die(fin, fout, length=0):
    if getattr(fin, "name", "").endswith("checkpoint_1_10.pt"):
        fout.write(fin.read(1000)); fout.flush(); os.fsync(fout.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real(fin, fout, length)
shutil.copyfileobj = copy_then_die
from fairseq_cli.train import cli_main
sys.argv = ["fairseq-train"] + sys.argv[1:]
cli_main()
"""


def updates_in(path):
    return torch.load(path, weights_only=True)["optimizer_history"][-1]["num_updates"]


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_atomic_copy_leaves_old_or_new_never_part(tmp_path):
    src, dst = tmp_path / "new.pt", tmp_path / "last.pt"
    src.write_bytes(b"n" * 5000)
    dst.write_bytes(b"old")
    child = subprocess.run([sys.executable, "-c", KILL_DURING_COPY.split("from fairseq_cli")[0]
                            .replace("checkpoint_1_10.pt", "new.pt")
                            + f"from fairseq_guided.compat import atomic_copy\n"
                              f"atomic_copy({str(src)!r}, {str(dst)!r})\n"], env=ENV)
    assert child.returncode == -signal.SIGKILL  # killed inside the copy
    assert dst.read_bytes() == b"old"  # not a 1000-byte mix
    compat.atomic_copy(str(src), str(dst))
    assert dst.read_bytes() == src.read_bytes() and not (tmp_path / "last.pt.tmp").exists()


def test_kill_during_checkpoint_copy_loses_nothing(tiny_corpus, tmp_path):
    save = tmp_path / "ckpt"
    cmd = train_cmd(tiny_corpus, save, *FLAGS, "--max-update", "15")
    killed = run([sys.executable, "-c", KILL_DURING_COPY, *cmd[1:]])
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    # the copy died: checkpoint_last.pt is the previous one, whole; the new one is whole too
    assert preflight.checkpoint_problem(str(save / "checkpoint_last.pt")) is None
    assert updates_in(save / "checkpoint_last.pt") == 5 and updates_in(save / "checkpoint_1_10.pt") == 10
    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert int(json_logs(resumed.stdout)[0]["num_updates"]) == 6  # from the update-5 checkpoint
    assert updates_in(save / "checkpoint_last.pt") == 15


def test_kill_during_the_first_save_is_not_a_silent_restart(tiny_corpus, tmp_path):
    """Killed inside the first save's copy: checkpoint_1_5.pt is whole, there is no
    checkpoint_last.pt. The same command used to print "No existing checkpoint found" and
    train from update 1 over it; it stops naming checkpoint_1_5.pt and how to resume, and
    that way resumes at update 6."""
    save = tmp_path / "ckpt"
    cmd = train_cmd(tiny_corpus, save, *FLAGS, "--max-update", "8")
    killed = run([sys.executable, "-c", KILL_DURING_COPY.replace("checkpoint_1_10.pt", "checkpoint_1_5.pt"),
                  *cmd[1:]])
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    assert sorted(p.name for p in save.glob("checkpoint*.pt")) == ["checkpoint_1_5.pt"]
    assert updates_in(save / "checkpoint_1_5.pt") == 5
    again = run(cmd)
    assert again.returncode != 0 and "num_updates" not in again.stdout, again.stdout[-2000:]
    assert f"there is no {save / 'checkpoint_last.pt'} to resume from" in again.stdout, again.stdout[-2000:]
    good = save / "checkpoint_1_5.pt"
    assert f"the newest readable checkpoint is {good} (update 5). To resume from it: cp {good} " \
           f"{save / 'checkpoint_last.pt'} (or pass --restore-file {good})" in again.stdout
    assert sorted(p.name for p in save.glob("checkpoint*.pt")) == ["checkpoint_1_5.pt"]  # nothing written
    resumed = run(cmd + ["--restore-file", good])
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert [int(r["num_updates"]) for r in json_logs(resumed.stdout)] == [6, 7, 8]
    assert updates_in(save / "checkpoint_last.pt") == 8


FULL_DISK = [sys.executable, REPO / "tests" / "launchers" / "full_disk.py"]


@pytest.mark.parametrize("fills", ["checkpoint_1_5.pt.tmp", "checkpoint_last.pt.tmp"],
                         ids=["first-file", "copy-to-last"])
def test_a_full_disk_during_the_first_save_names_the_file_and_leaves_no_partial(tiny_corpus, tmp_path, fills):
    """The disk fills 1000 bytes into the first save's checkpoint file, or into its copy to
    checkpoint_last.pt: the error names that file and its partial .tmp is gone. After the
    copy failed, the same command (space again) names the whole checkpoint instead of
    starting afresh."""
    save = tmp_path / "ckpt"
    cmd = train_cmd(tiny_corpus, save, *FLAGS, "--max-update", "8")
    full = run(FULL_DISK + [fills, "1000", "fairseq-train", *cmd[1:]])
    assert full.returncode != 0, full.stdout[-2000:]
    assert "No space left on device (the disk is full)" in full.stdout, full.stdout[-3000:]
    if fills == "checkpoint_1_5.pt.tmp":
        assert f"cannot write the checkpoint {save / 'checkpoint_1_5.pt'}: " in full.stdout
        assert not list(save.glob("checkpoint*"))
        return
    assert f"cannot copy {save / 'checkpoint_1_5.pt'} to {save / 'checkpoint_last.pt'}: " in full.stdout
    assert f"the partial {save / 'checkpoint_last.pt.tmp'} was removed" in full.stdout
    assert not list(save.glob("*.tmp")) and not (save / "checkpoint_last.pt").exists()
    assert updates_in(save / "checkpoint_1_5.pt") == 5
    again = run(cmd)
    assert again.returncode != 0 and "num_updates" not in again.stdout, again.stdout[-2000:]
    assert f"there is no {save / 'checkpoint_last.pt'} to resume from" in again.stdout, again.stdout[-2000:]
    assert re.search(rf"the newest readable checkpoint is {re.escape(str(save))}/checkpoint_(1_5|best)\.pt "
                     rf"\(update 5\)", again.stdout), again.stdout[-2000:]


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    """A save dir with checkpoints at updates 5 and 10 (checkpoint_last.pt = 10)."""
    save = tmp_path_factory.mktemp("trained")
    out = run(train_cmd(tiny_corpus, save, *FLAGS, "--max-update", "10"))
    assert out.returncode == 0, out.stdout[-2000:]
    return save


def copy_of(src, dest):
    dest.mkdir()
    for f in src.glob("checkpoint*.pt"):
        (dest / f.name).write_bytes(f.read_bytes())
        os.utime(dest / f.name, (f.stat().st_mtime, f.stat().st_mtime))
    return dest


@pytest.mark.parametrize("damage", ["zero-bytes", "truncated", "byte-flipped"])
def test_damaged_checkpoint_last_is_refused_naming_the_newest_readable(tiny_corpus, trained, tmp_path,
                                                                       damage):
    save = copy_of(trained, tmp_path / "ckpt")
    last = save / "checkpoint_last.pt"
    for newer in ("checkpoint_1_10.pt", "checkpoint_best.pt"):  # the newest readable: update 5
        (save / newer).unlink(missing_ok=True)
    size = last.stat().st_size
    if damage == "zero-bytes":
        last.write_bytes(b"")
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[: size // 2])
    else:
        flip_byte(last, size // 2)  # inside a tensor record: torch.load alone accepts it
        assert torch.load(last, weights_only=True)
    before = last.read_bytes()
    out = run(train_cmd(tiny_corpus, save, *FLAGS, "--max-update", "12"))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert f"{last} is " in out.stdout, out.stdout[-2000:]
    assert f"newest readable checkpoint is {save / 'checkpoint_1_5.pt'} (update 5)" in out.stdout
    assert last.read_bytes() == before  # nothing was overwritten


def test_damaged_restore_file_is_refused_naming_it(tiny_corpus, trained, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained / "checkpoint_1_5.pt").read_bytes())
    flip_byte(bad, bad.stat().st_size // 3)
    out = run(train_cmd(tiny_corpus, tmp_path / "ckpt", *FLAGS, "--max-update", "12",
                        "--restore-file", bad))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert f"the checkpoint to resume from, {bad}, is corrupted" in out.stdout, out.stdout[-2000:]


def test_second_run_on_a_save_dir_in_use_is_refused_naming_the_holder(tiny_corpus, tmp_path):
    save = tmp_path / "ckpt"
    preflight.lock_save_dir(str(save))  # this test process is the first run
    out = run(train_cmd(tiny_corpus, save, *FLAGS, "--max-update", "2"))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert f"is in use by another training run (PID {os.getpid()}" in out.stdout, out.stdout[-2000:]
    assert not list(save.glob("checkpoint*.pt"))


def test_lock_of_a_killed_run_does_not_block(tiny_corpus, tmp_path):
    save = tmp_path / "ckpt"
    holder = subprocess.run([sys.executable, "-c",
                             "import os, signal; from fairseq_guided import preflight; "
                             f"preflight.lock_save_dir({str(save)!r}); os.kill(os.getpid(), signal.SIGKILL)"],
                            env=ENV)
    assert holder.returncode == -signal.SIGKILL and (save / preflight.LOCK_NAME).read_text().strip()
    out = run(train_cmd(tiny_corpus, save, *FLAGS, "--max-update", "2"))
    assert out.returncode == 0, out.stdout[-2000:]
