"""The main job: on the real offline de-en corpus, train baseline LAMB and guided alpha,
beta1 and alpha+beta1 with the same budget and seeds, score each with fairseq-generate
(beam 4) and sacrebleu, and write a report folder (BLEU table as the paper's Table 1,
plots of the learned schedules and loss curves, the exact commands).

    python scripts/main_job.py                 # CPU preset (configs/nmt/cpu.yaml)
    python scripts/main_job.py --preset gpu    # one GPU, the four variants at once

Resumable: a finished run or evaluation is skipped, an interrupted run continues from its
last checkpoint, so the same command picks up where a stopped job left off.
"""
import argparse
import json
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import nmt as nmt_recipe
from . import plots as plot_schedules
from . import tables as compare_table

REPO = nmt_recipe.REPO


def say(text):
    print(f"[main_job] {text}", flush=True)


def prepare(data_dir: Path, preset) -> list:
    cmd = ["bash", str(REPO / "scripts" / "prepare_offline_corpus.sh"), "--dest", str(data_dir),
           "--vocab-size", str(preset.vocab_size), *preset.data_options]
    subprocess.run(cmd, check=True)
    return cmd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=[n for n, p in nmt_recipe.PRESETS.items() if p.corpus == "offline"],
                        default="cpu")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the offline corpus goes (default: data/libreoffice-de-en[-VOCAB])")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: runs/main_job-PRESET)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    parser.add_argument("--quiet", action="store_true", help="keep fairseq's own output in the run logs only")
    parser.add_argument("--no-prepare", action="store_true",
                        help="use the corpus already prepared in --data-dir as it is (a machine without "
                             "Debian's archive, e.g. the GPU machine with the corpus carried over)")
    args = parser.parse_args()
    preset = nmt_recipe.PRESETS[args.preset]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(preset.seeds)
    suffix = "" if preset.vocab_size == 8000 else f"-{preset.vocab_size}"
    data_dir = args.data_dir or REPO / "data" / f"libreoffice-de-en{suffix}"
    runs = args.runs or REPO / "runs" / f"main_job-{args.preset}"
    report = runs / "report"
    start = time.time()
    plan = [(v, s) for s in seeds for v in nmt_recipe.VARIANTS]
    stages = 1 + 2 * len(plan) + 1
    times = {}

    t0 = time.time()
    say(f"stage 1/{stages}: prepare the offline de-en corpus in {data_dir}")
    if args.no_prepare:
        if not (data_dir / "bin").is_dir() or not (data_dir / "raw").is_dir():
            raise SystemExit(f"--no-prepare: no prepared corpus (bin/ and raw/) in {data_dir}")
        prepare_cmd = ["# --no-prepare: the corpus in", str(data_dir)]
    else:
        prepare_cmd = prepare(data_dir, preset)
    times["prepare"] = time.time() - t0
    say(f"stage 1/{stages}: prepare done in {times['prepare']:.0f} s")
    data, raw = data_dir / "bin", data_dir / "raw"

    def train_one(i, variant, seed):
        t0 = time.time()
        say(f"stage {2 + i}/{stages}: train {variant}, seed {seed} (run {i + 1} of {len(plan)})")
        ran = nmt_recipe.train(data, runs / f"{variant}-seed{seed}", variant, seed, preset,
                               echo=not args.quiet and preset.parallel == 1)
        times[f"train {variant} seed {seed}"] = time.time() - t0
        say(f"stage {2 + i}/{stages}: train {variant}, seed {seed} "
            + (f"done in {time.time() - t0:.0f} s" if ran else "had finished before: skipped"))

    with ThreadPoolExecutor(max_workers=preset.parallel) as pool:  # each run is a subprocess
        for future in [pool.submit(train_one, i, v, s) for i, (v, s) in enumerate(plan)]:
            future.result()
    for i, (variant, seed) in enumerate(plan):
        t0 = time.time()
        stage = 2 + len(plan) + i
        say(f"stage {stage}/{stages}: evaluate {variant}, seed {seed} (beam 4, sacrebleu)")
        bleu = nmt_recipe.evaluate(data, raw, runs / f"{variant}-seed{seed}", preset)
        times[f"evaluate {variant} seed {seed}"] = time.time() - t0
        say(f"stage {stage}/{stages}: {variant}, seed {seed}: BLEU {bleu:.2f} ({time.time() - t0:.0f} s)")

    say(f"stage {stages}/{stages}: report in {report}")
    report.mkdir(parents=True, exist_ok=True)
    table = compare_table.table(runs)
    plots = plot_schedules.plot(runs, report)
    (report / "bleu_table.md").write_text(table)
    commands = [f"# prepare\n{shlex.join(prepare_cmd)}\n"]
    commands += [(runs / f"{v}-seed{s}" / "commands.sh").read_text() for v, s in plan]
    (report / "commands.sh").write_text("\n".join(commands))
    total = time.time() - start
    summary = {"preset": args.preset, "seeds": seeds, "wall_seconds": round(total),
               "stage_seconds": {k: round(v) for k, v in times.items()},
               "plots": [p.name for p in plots], "data": str(data_dir)}
    (report / "summary.json").write_text(json.dumps(summary, indent=1))
    print(table, end="")
    say(f"done in {total / 60:.1f} min: {report}/bleu_table.md, {', '.join(p.name for p in plots)}, "
        f"commands.sh, summary.json")


if __name__ == "__main__":
    main()
