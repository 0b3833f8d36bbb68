"""Plot the learned schedules and the loss curves of a folder of runs (as the paper's
Figures 1-3): alpha.png, beta1.png, guide_loss.png, valid_loss.png, and curves.csv with
every plotted point.

    python user_scripts/plot_schedules.py RUNS [--out REPORT_DIR]

RUNS is a folder of the recipe's runs (run.json and train.log in each), a plain
fairseq-train run folder holding its log (--log-file FILE, or the console output saved
as a .log file), a folder of such run folders, or one log file; the log may be in
--log-format json or simple.
"""
import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .logkeys import ALPHA, BETA1, GUIDE_LOSS, LOSS, NUM_UPDATES  # noqa: E402
from .runlogs import find_logs, log_rows  # noqa: E402

FIGURES = {  # file: (log kind, field, y label, title)
    "alpha.png": ("train_inner", ALPHA, "alpha (lr scale)", "Learned alpha"),
    "beta1.png": ("train_inner", BETA1, "beta1", "Learned beta1"),
    "guide_loss.png": ("train_inner", GUIDE_LOSS, "guidance loss (bits/token)", "Guidance loss"),
    "valid_loss.png": ("valid", LOSS, "validation loss (bits/token)", "Validation loss"),
}


class NothingToPlot(SystemExit):
    """No log, or no line of fairseq's json/simple formats in any: says what is missing."""


def curves(runs_dir: Path, logs=None):
    """{figure: {label: [(update, value)]}} for every run that logged that field; a run
    with --guided-groups logs 'guided_alpha/GROUP' and gets one line per group."""
    out = {name: {} for name in FIGURES}
    for run_label, log in find_logs(runs_dir) if logs is None else logs:
        for name, (kind, key, _, _) in FIGURES.items():
            rows = log_rows(log, kind)
            for field, label in fields(rows, key, run_label):
                points = [(int(r[NUM_UPDATES]), float(r[field])) for r in rows if field in r]
                if points:
                    out[name][label] = points
    return out


def fields(rows, key: str, label: str):
    """[(field, line label)]: `key` itself, then each 'key/GROUP' in the order logged."""
    groups = dict.fromkeys(f for r in rows for f in r if f.startswith(key + "/"))
    return [(key, label)] + [(f, f"{label}: {f[len(key) + 1:]}") for f in groups]


def plot(runs_dir: Path, out_dir: Path):
    logs = find_logs(runs_dir)
    if not logs:
        raise NothingToPlot(f"plot_schedules: no fairseq log in {runs_dir}: give a run folder with the log "
                            "fairseq-train wrote (--log-file FILE, or its console output saved as a .log file), "
                            "a folder of such folders, or the log file")
    data = curves(runs_dir, logs)
    if not any(data.values()):
        raise NothingToPlot(f"plot_schedules: {', '.join(str(log) for _, log in logs)}: no training or validation "
                            "line in fairseq's --log-format json or simple (train with one of them, "
                            "--log-interval below the run's updates)")
    if not data["alpha.png"] and not data["beta1.png"]:
        print(f"plot_schedules: no learned value (guided_alpha, guided_beta1) in {runs_dir}'s logs: "
              "losses only (learned values need --task guided_translation and --guided-hparams)", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with open(out_dir / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["figure", "run", "update", "value"])
        for name, series in data.items():
            if not series:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for label, points in series.items():
                ax.plot([u for u, _ in points], [v for _, v in points], label=label)
                writer.writerows([name, label, u, v] for u, v in points)
            kind, key, ylabel, title = FIGURES[name]
            ax.set_xlabel("update")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            written.append(out_dir / name)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="a run folder, a folder of run folders, or a fairseq log file")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: RUNS/report)")
    args = parser.parse_args()
    folder = args.runs.parent if args.runs.is_file() else args.runs
    for path in plot(args.runs, args.out or folder / "report"):
        print(path)


if __name__ == "__main__":
    main()
