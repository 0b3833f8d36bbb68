"""Table 2 of a sweep comparison (table2.md, table2.json) and its compute plot
(bo_vs_guided.png, bo_vs_guided.csv): the best validation value found so far against the
cumulative wall time of the trials, for each row's trials in trial order. Each row's
selected model is compared with BO's on the test set by sacrebleu's paired bootstrap: one
seed each, so that is test-set noise only; seed noise is not measured by a sweep."""
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import stats  # noqa: E402


def best_so_far(trials: list, maximize: bool) -> list:
    """[(cumulative wall seconds, best objective so far)] after each trial (trial order);
    a failed trial adds its time and leaves the best as it was."""
    points, total, best = [], 0.0, None
    for t in trials:
        total += t["wall_seconds"] or 0.0
        if t["objective"] is not None:
            better = best is None or (t["objective"] > best if maximize else t["objective"] < best)
            best = t["objective"] if better else best
        points.append((total, best))
    return points


def selected(trials: list, maximize: bool):
    done = [t for t in trials if t["state"] == "COMPLETE"]
    if not done:
        return None
    return (max if maximize else min)(done, key=lambda t: t["objective"])


def row(name: str, label: str, trials: list, maximize: bool, test_bleu) -> dict:
    best = selected(trials, maximize)
    return {"row": name, "label": label, "trials": len(trials),
            "completed": sum(t["state"] == "COMPLETE" for t in trials),
            "wall_seconds": round(sum(t["wall_seconds"] or 0.0 for t in trials), 1),
            "valid": best["objective"] if best else None, "test_bleu": test_bleu,
            "selected": {"number": best["number"], "params": best["params"], "run": best["run"]} if best else None,
            "curve": best_so_far(trials, maximize)}


def versus_bo(rows: list, references: Path, hypotheses: str) -> None:
    """Adds `vs_bo` to every row with a test score: its selected model's test BLEU minus
    that of base-bo's, with sacrebleu's paired bootstrap p (the `--paired-bs` test) on the
    outputs `hypotheses` (a file name in each selected run's folder)."""
    bo = next((r for r in rows if r["row"] == "base-bo" and r["test_bleu"] is not None), None)
    if bo is None:
        return
    refs = references.read_text().splitlines()
    base = (Path(bo["selected"]["run"]) / hypotheses).read_text().splitlines()
    for r in rows:
        if r is not bo and r["test_bleu"] is not None:
            system = (Path(r["selected"]["run"]) / hypotheses).read_text().splitlines()
            test = stats.paired_bootstrap(base, system, refs)
            r["vs_bo"] = {"delta": r["test_bleu"] - bo["test_bleu"], "p": test["p"], "samples": test["samples"]}


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def markdown(rows: list, metric: str) -> str:
    lines = [f"| row | trials | time (min, sum of trial wall times) | best validation {metric} | test BLEU "
             "| test BLEU - BO's (paired bootstrap p) | selected values |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k.split('.')[-1]}={v:.4g}" for k, v in (r["selected"] or {}).get("params", {}).items())
        lines.append(f"| {r['label']} | {r['completed']} of {r['trials']} | {r['wall_seconds'] / 60:.1f} | "
                     f"{_fmt(r['valid'], '.2f')} | {_fmt(r['test_bleu'], '.2f')} | {_versus(r)} | {params or 'untuned'} |")
    return "\n".join(lines) + "\n"


def _versus(r):
    v = r.get("vs_bo")
    return "-" if v is None else f"{v['delta']:+.2f} (p {v['p']:.3f})"


def plot(rows: list, metric: str, out: Path) -> list:
    """bo_vs_guided.png: BO's best-so-far curve, guided runs on the same axes (a single
    untuned run is a point; a tuned row its own curve). bo_vs_guided.csv: every point."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    with open(out / "bo_vs_guided.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "trial_index", "cumulative_wall_seconds", f"best_valid_{metric}"])
        for r in rows:
            curve = [(s / 60, v) for s, v in r["curve"]]
            writer.writerows([r["row"], i + 1, round(s * 60, 1), v] for i, (s, v) in enumerate(curve))
            shown = [(s, v) for s, v in curve if v is not None]
            if not shown:
                continue
            if len(curve) == 1:
                ax.plot(*zip(*shown), "o", markersize=9, label=r["label"])
            else:
                ax.step(*zip(*shown), where="post", marker=".", label=r["label"])
    ax.set_xlabel("cumulative compute: sum of trial wall times (min)")
    ax.set_ylabel(f"best validation {metric} so far")
    ax.set_title("static values by Bayesian optimisation (TPE) vs guided")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bo_vs_guided.png", dpi=100)
    plt.close(fig)
    return [out / "bo_vs_guided.png", out / "bo_vs_guided.csv"]


def write(rows: list, metric: str, out: Path, meta: dict) -> list:
    out.mkdir(parents=True, exist_ok=True)
    (out / "table2.json").write_text(json.dumps(dict(meta, metric=metric, rows=rows), indent=1))
    (out / "table2.md").write_text(markdown(rows, metric))
    return [out / "table2.md", out / "table2.json", *plot(rows, metric, out)]
