"""What every recipe shares: the repository's paths (defined here once), fairseq's
command-line tools, a logged subprocess, and the small helpers for messages and flags."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"  # every preset: configs/nmt, configs/t5, configs/bench (guided_recipes.presets)
PLUGIN = REPO / "fairseq_guided"
# fairseq's command line tools: beside this Python, or $FAIRSEQ_BIN (pip --target installs)
BIN = Path(os.environ.get("FAIRSEQ_BIN", Path(sys.executable).parent))
OFFLINE_CORPUS = REPO / "data" / "libreoffice-de-en"  # scripts/prepare_offline_corpus.sh's default


def runs_folder(kind: str, preset: str, runs_root: Path = REPO / "runs") -> Path:
    """Where a job of `kind` (main_job, sweep, study_NAME) with `preset` keeps its runs:
    RUNS_ROOT/KIND-PRESET; the main job finds the sweep's report beside its own runs."""
    return Path(runs_root) / f"{kind}-{preset}"


def sayer(tag: str):
    """print(f"[tag] text") with a flush: each job's progress lines."""
    return lambda text: print(f"[{tag}] {text}", flush=True)


def floats(text: str) -> tuple:
    """A comma-separated flag value as floats: '0.25,1,4' -> (0.25, 1.0, 4.0)."""
    return tuple(float(x) for x in text.split(","))


def run_logged(cmd, log_path: Path, echo=True, append=False, watch=None, env=None):
    """Run a command, its output (stdout and stderr) to log_path and, with `echo`, to the
    console. `watch(line)` is called on each line; when it returns a reason, the command is
    stopped (SIGTERM) and the reason returned; None when the command ran to its end. A
    failed command stops the caller with its exit status, the command and its log's end."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stopped = None
    with open(log_path, "a" if append else "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
            if watch is not None and stopped is None:
                stopped = watch(line)
                if stopped is not None:
                    log.flush()
                    proc.terminate()
        proc.wait()
    if stopped is not None:
        return stopped
    if proc.returncode != 0:
        tail = "" if echo else "\n" + log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(map(str, cmd))}\n  see {log_path}{tail}")
    return None
