"""BLEU of a folder of runs in the shape of the paper's Table 1: rows base, alpha, beta1,
alpha+beta1; each seed, the mean and the spread (max - min) over seeds.

    python user_scripts/compare_table.py RUNS_DIR [--pair de-en]
"""
import argparse
import json
import statistics
from pathlib import Path

from .runlogs import ORDER, find_runs


def table(runs_dir: Path, pair: str = "de-en") -> str:
    by_variant = {}
    for variant, seed, run in find_runs(runs_dir):
        result = json.loads((run / "run.json").read_text())
        if "bleu" in result:
            by_variant.setdefault(variant, {})[seed] = result["bleu"]
    seeds = sorted({s for scores in by_variant.values() for s in scores})
    head = f"| {pair} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread |"
    lines = [head, "|" + "---|" * (len(seeds) + 3)]
    for variant in [v for v in ORDER if v in by_variant] + [v for v in by_variant if v not in ORDER]:
        scores = by_variant[variant]
        values = [scores[s] for s in seeds if s in scores]
        cells = [f"{scores[s]:.2f}" if s in scores else "-" for s in seeds]
        spread = max(values) - min(values) if len(values) > 1 else 0.0
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {statistics.mean(values):.2f} | {spread:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--pair", default="de-en")
    args = parser.parse_args()
    print(table(args.runs, args.pair), end="")


if __name__ == "__main__":
    main()
