"""How to spend the machine's cores on a long study: one run with every core's threads,
or one single-threaded run per core side by side (issue 24's compute plan).

    python -m guided_recipes.lanes [--preset cpu] [--updates 300] [--out FILE.json]

Trains the preset's baseline and guided beta1 for --updates updates (no validation, no
checkpoints) two ways on the same corpus: one after the other with OMP_NUM_THREADS=2, and
both at once with OMP_NUM_THREADS=1 each. Compares the wall time for the pair and the
updates per second of each run (fairseq's own `ups`, median over its log intervals after
the first). Needs the main job's corpus (data/libreoffice-de-en).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from . import nmt
from ..common import OFFLINE_CORPUS
from ..report.logkeys import UPS
from ..report.runlogs import log_rows

PAIR = ("base", "beta1")


def _command(data, run, variant, preset, updates):
    overrides = [f"optimization.max_update={updates}", "checkpoint.no_save=true", "dataset.disable_validation=true",
                 "common.log_interval=25"]
    return nmt.train_command(data, run, variant, 1, preset, overrides)


def _start(cmd, run: Path, threads: int):
    run.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen(cmd, stdout=open(run / "train.stdout", "w"), stderr=subprocess.STDOUT, env=env)


def _ups(run: Path) -> float:
    rows = log_rows(run / "train.log", "train_inner")[1:]  # the first interval holds start-up
    if not rows:
        raise SystemExit(f"no train_inner rows in {run / 'train.log'}: see {run / 'train.stdout'}")
    return statistics.median(float(r[UPS]) for r in rows)


def measure(data: Path, preset, updates: int, threads: int, work: Path) -> dict:
    out = {"threads": threads, "updates": updates}
    start = time.time()
    for variant in PAIR:  # one after the other, every thread each
        run = work / f"sequential-{variant}"
        t0 = time.time()
        proc = _start(_command(data, run, variant, preset, updates), run, threads)
        if proc.wait() != 0:
            raise SystemExit(f"failed: see {run / 'train.stdout'}")
        out[f"sequential {variant} seconds"] = round(time.time() - t0, 1)
        out[f"sequential {variant} ups"] = _ups(run)
    out["sequential pair seconds"] = round(time.time() - start, 1)
    start = time.time()
    procs = {v: _start(_command(data, work / f"side-{v}", v, preset, updates), work / f"side-{v}", 1) for v in PAIR}
    for variant, proc in procs.items():  # both at once, one thread each
        if proc.wait() != 0:
            raise SystemExit(f"failed: see {work / f'side-{variant}' / 'train.stdout'}")
        out[f"side by side {variant} ups"] = _ups(work / f"side-{variant}")
    out["side by side pair seconds"] = round(time.time() - start, 1)
    out["side by side / sequential wall"] = round(out["side by side pair seconds"] / out["sequential pair seconds"], 3)
    return with_throughput(out)


def with_throughput(out: dict) -> dict:
    """Updates a second of the whole machine, start-up excluded, when every lane is busy: one
    run at a time does one update of each kind in sum(1/ups) seconds; side by side the
    lanes' rates add up. The pair's wall times above also hold the start-ups and the tail
    where one side-by-side run is left alone on one thread."""
    sequential = len(PAIR) / sum(1 / out[f"sequential {v} ups"] for v in PAIR)
    side = sum(out[f"side by side {v} ups"] for v in PAIR)
    out.update({"sequential machine ups": round(sequential, 3), "side by side machine ups": round(side, 3),
                "side by side / sequential throughput": round(side / sequential, 3)})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(nmt.PRESETS), default="cpu")
    parser.add_argument("--data", type=Path, default=OFFLINE_CORPUS / "bin")
    parser.add_argument("--updates", type=int, default=300, help="updates of each run (>= 50)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of the sequential runs")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here (JSON)")
    args = parser.parse_args()
    if args.updates < 50:
        parser.error(f"--updates must be >= 50 (two log intervals past start-up); got {args.updates}")
    if not (args.data / "guide.de-en.de.idx").is_file() and not list(args.data.glob("guide.*.idx")):
        raise SystemExit(f"--data {args.data}: no guide split (run scripts/main_job.py or "
                         f"scripts/prepare_offline_corpus.sh first)")
    with tempfile.TemporaryDirectory(prefix="lanes-") as work:
        result = measure(args.data, nmt.PRESETS[args.preset], args.updates, args.threads, Path(work))
    result["faster"] = "side by side" if result["side by side / sequential throughput"] > 1 else "sequential"
    for key, value in result.items():
        print(f"{key:>34}: {value}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
