"""Plot the learned schedules and the loss curves of a folder of runs (as the paper's
Figures 1-3): alpha.png, beta1.png, guide_loss.png, valid_loss.png, and curves.csv with
every plotted point.

    python user_scripts/plot_schedules.py RUNS_DIR [--out REPORT_DIR]
"""
import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .runlogs import find_runs, log_rows  # noqa: E402

FIGURES = {  # file: (log kind, field, y label, title)
    "alpha.png": ("train_inner", "guided_alpha", "alpha (lr scale)", "Learned alpha"),
    "beta1.png": ("train_inner", "guided_beta1", "beta1", "Learned beta1"),
    "guide_loss.png": ("train_inner", "guide_loss", "guidance loss (bits/token)", "Guidance loss"),
    "valid_loss.png": ("valid", "loss", "validation loss (bits/token)", "Validation loss"),
}


def curves(runs_dir: Path):
    """{figure: {label: [(update, value)]}} for every run that logged that field; a run
    with --guided-groups logs 'guided_alpha/GROUP' and gets one line per group."""
    out = {name: {} for name in FIGURES}
    for variant, seed, run in find_runs(runs_dir):
        log = run / "train.log"
        if not log.exists():
            continue
        for name, (kind, key, _, _) in FIGURES.items():
            rows = log_rows(log, kind)
            for field, label in fields(rows, key, f"{variant} seed {seed}"):
                points = [(int(r["num_updates"]), float(r[field])) for r in rows if field in r]
                if points:
                    out[name][label] = points
    return out


def fields(rows, key: str, label: str):
    """[(field, line label)]: `key` itself, then each 'key/GROUP' in the order logged."""
    groups = dict.fromkeys(f for r in rows for f in r if f.startswith(key + "/"))
    return [(key, label)] + [(f, f"{label}: {f[len(key) + 1:]}") for f in groups]


def plot(runs_dir: Path, out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    data = curves(runs_dir)
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
    parser.add_argument("runs", type=Path, help="folder of run folders (each with train.log, run.json)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: RUNS/report)")
    args = parser.parse_args()
    for path in plot(args.runs, args.out or args.runs / "report"):
        print(path)


if __name__ == "__main__":
    main()
