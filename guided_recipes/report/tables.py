"""The paper's Table 1 for a folder of runs, with statistics: per variant and test set, each
seed's BLEU, the mean, the sample standard deviation and a 95% t interval over seeds; per
variant, the paired difference to base (same seed), with sacrebleu's paired bootstrap on
each seed's outputs and on all seeds' outputs pooled; with tuning-free arms among the runs,
the same paired difference of guided beta1 and alpha+beta1 to each arm.

    python user_scripts/compare_table.py RUNS_DIR [--raw DATA/raw] [--json OUT.json]

Without --raw (the references) only the BLEU columns are shown.
"""
import argparse
import json
from pathlib import Path

from . import stats
from ..presets import TUNING_FREE  # the arms of configs/nmt/tuning_free.yaml
from .runlogs import ORDER, find_runs

GUIDED = ("beta1", "alpha+beta1")  # compared with each tuning-free arm

SUBSETS = {"test": "LibreOffice help (in domain)",
           "test_debian": "Debian package descriptions (held-out domain, never trained on)"}
METHOD = (
    "Mean and sd (n-1) over seeds; 95% interval: mean +- t(0.975, n-1) * sd / sqrt(n) (Student's t, "
    "as seeds are few). Paired difference: variant minus base of the same seed (same data order and "
    "initialisation). Per seed, p is sacrebleu's paired bootstrap (--paired-bs, 1000 resamples of "
    "the test sentences, seed 12345). Seeds combined two ways: the mean of the per-seed deltas with its "
    "95% t interval (seed noise), and one paired bootstrap on all seeds' outputs pooled (every seed's "
    "hypotheses concatenated, base's in the same seed order, references repeated: test-set noise of "
    "the seed-averaged difference).")


def bleu_scores(runs_dir: Path, subset: str) -> dict:
    """{variant: {seed: (BLEU, run folder)}} of the runs scored on `subset`."""
    key = "bleu" if subset == "test" else f"bleu_{subset}"
    out = {}
    for variant, seed, run in find_runs(runs_dir):
        result = json.loads((run / "run.json").read_text())
        if key in result:
            out.setdefault(variant, {})[seed] = (result[key], run)
    return out


def _lines(path: Path):
    return path.read_text().splitlines()


def compare(base: dict, other: dict, raw: Path, subset: str, tgt: str) -> dict:
    """Paired comparison of one variant's runs with base's over their common seeds."""
    seeds = sorted(set(base) & set(other))
    refs = _lines(raw / f"{subset}.{tgt}")
    hyps = {name: {s: _lines(runs[s][1] / f"{subset}.hyp.{tgt}") for s in seeds}
            for name, runs in (("base", base), ("other", other))}
    per_seed = {}
    for s in seeds:
        test = stats.paired_bootstrap(hyps["base"][s], hyps["other"][s], refs)
        per_seed[str(s)] = {"delta": other[s][0] - base[s][0], "p": test["p"]}
    pooled = stats.paired_bootstrap([h for s in seeds for h in hyps["base"][s]],
                                    [h for s in seeds for h in hyps["other"][s]], refs * len(seeds))
    return {"seeds": seeds, "per_seed": per_seed,
            "delta": stats.mean_ci([per_seed[str(s)]["delta"] for s in seeds]), "pooled": pooled}


def table1(runs_dir: Path, raw: Path = None, tgt: str = "en") -> dict:
    """Everything the report says about Table 1, as JSON-ready data."""
    out = {"method": METHOD, "subsets": {}}
    for subset, about in SUBSETS.items():
        scores = bleu_scores(runs_dir, subset)
        if not scores:
            continue
        variants = [v for v in ORDER if v in scores] + [v for v in scores if v not in ORDER]
        rows = {v: dict(stats.mean_ci([b for b, _ in scores[v].values()]),
                        bleu={str(s): b for s, (b, _) in sorted(scores[v].items())}) for v in variants}
        entry = {"about": about, "rows": rows, "vs_base": {}}
        if raw is not None:
            entry["sentences"] = len(_lines(raw / f"{subset}.{tgt}"))
            if "base" in scores:
                entry["vs_base"] = {v: compare(scores["base"], scores[v], raw, subset, tgt)
                                    for v in variants if v != "base"}
            entry["vs_tuning_free"] = {f"{g} - {arm}": compare(scores[arm], scores[g], raw, subset, tgt)
                                       for arm in TUNING_FREE if arm in scores for g in GUIDED if g in scores}
        out["subsets"][subset] = entry
    return out


def _num(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def _interval(ci):
    return "-" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _paired_rows(title: str, comparisons: dict, seeds) -> list:
    if not comparisons:
        return []
    out = ["", f"| {title} | " + " | ".join(f"seed {s}: delta (p)" for s in seeds)
           + " | mean delta | 95% CI | pooled delta | pooled p |", "|" + "---|" * (len(seeds) + 5)]
    for name, c in comparisons.items():
        cells = [f"{c['per_seed'][s]['delta']:+.2f} ({c['per_seed'][s]['p']:.3f})" if s in c["per_seed"]
                 else "-" for s in seeds]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {c['delta']['mean']:+.2f} | "
                   f"{_interval(c['delta']['ci'])} | {c['pooled']['delta']:+.2f} | {c['pooled']['p']:.3f} |")
    return out


def markdown(data: dict, pair: str = "de-en") -> str:
    out = []
    for subset, entry in data["subsets"].items():
        seeds = sorted({s for row in entry["rows"].values() for s in row["bleu"]}, key=int)
        size = f", {entry['sentences']} sentences" if "sentences" in entry else ""
        out += [f"### {pair} BLEU on `{subset}`: {entry['about']}{size}", "",
                "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd | 95% CI |",
                "|" + "---|" * (len(seeds) + 4)]
        for variant, row in entry["rows"].items():
            cells = [_num(row["bleu"].get(s)) for s in seeds]
            out.append(f"| {variant} | " + " | ".join(cells)
                       + f" | {row['mean']:.2f} | {_num(row['sd'])} | {_interval(row['ci'])} |")
        out += _paired_rows("vs base", entry["vs_base"], seeds)
        out += _paired_rows("guided - tuning-free", entry.get("vs_tuning_free", {}), seeds)
        out.append("")
    out.append(data["method"])
    return "\n".join(out) + "\n"


def table(runs_dir: Path, pair: str = "de-en", raw: Path = None, tgt: str = "en") -> str:
    return markdown(table1(runs_dir, raw, tgt), pair)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--pair", default="de-en")
    parser.add_argument("--raw", type=Path, default=None, help="the corpus's raw/ folder (references)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if not find_runs(args.runs):
        # a plain fairseq-train run has no BLEU of its own: nothing to tabulate
        raise SystemExit(f"compare_table: no run.json in {args.runs} or its subfolders: the table reads the BLEU "
                         "that `scripts/nmt_recipe.py evaluate` records there; score a plain fairseq-train run "
                         "with fairseq-generate and sacrebleu (README, \"Use it on your data\")")
    data = table1(args.runs, args.raw, args.pair.split("-")[1])
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    print(markdown(data, args.pair), end="")


if __name__ == "__main__":
    main()
