"""Seed noise for the sweep comparison, which has one seed per row: the tuned rows' selected
values (BO's static lr and beta1; guided alpha's selected meta lr) retrained with seeds 2
and 3 (seed 1 is the sweep's own trial) in the main job's protocol (nmt.train of the cpu
preset, test BLEU of checkpoint_last.pt), then compared by seed with each other and with the
main job's runs of the same preset (untuned guided beta1 and alpha+beta1, the hand-tuned
base) through tables.compare (per-seed paired bootstrap, 95% t interval of the per-seed
differences). A sweep trial counts as seed 1 of the main job's protocol only when its best
validation was its last (checkpoint_best.pt = checkpoint_last.pt): checked below.
Resumable (finished runs are skipped). Run from a clone holding runs/main_job-cpu and
runs/sweep-cpu:  python results/sweep-cpu-2026-11-30/seeds.py"""
import json
import sys
from pathlib import Path

from guided_recipes import nmt, stats, tables

R = Path("runs")
data, raw = Path("data/libreoffice-de-en/bin"), Path("data/libreoffice-de-en/raw")
preset = nmt.PRESETS["cpu"]
rows = {r["row"]: r for r in json.loads((R / "sweep-cpu/report/table2.json").read_text())["rows"]}


def overrides_of(params: dict) -> list:
    out = []
    if "static.lr" in params:
        out.append(f"optimization.lr=[{params['static.lr']!r}]")
    if "static.beta1" in params:
        out.append(f"optimizer.lamb_betas='({params['static.beta1']!r}, 0.999)'")
    out += [f"{k}={v!r}" for k, v in params.items() if not k.startswith("static.")]
    return out


def reseed(row: str, variant: str) -> dict:
    """{seed: (test BLEU, run folder)} of the row's selected values over seeds 1-3."""
    r = rows[row]
    trial = Path(r["selected"]["run"])
    valid = [float(json.loads(line.split(" - ", 1)[1])["valid_bleu"])
             for line in (trial / "hydra_objective.log").read_text().splitlines() if "][valid][INFO] - " in line]
    print(f"{row}: selected {r['selected']['params']}; its trial's validation BLEU {valid}", flush=True)
    if valid[-1] != max(valid):
        sys.exit(f"{row}: seed 1 (checkpoint_best.pt) is not the main job's protocol (checkpoint_last.pt)")
    out = {1: (r["test_bleu"], trial)}
    for seed in (2, 3):
        run = R / "sweep-cpu" / "seeds" / f"{row}-selected-seed{seed}"
        nmt.train(data, run, variant, seed, preset, echo=False, overrides=overrides_of(r["selected"]["params"]),
                  info={"setting": f"{row}-selected"})
        out[seed] = (nmt.evaluate(data, raw, run, preset), run)
        print(f"{row} seed {seed}: test BLEU {out[seed][0]:.2f}", flush=True)
    return out


def main_job(variant):
    return {s: (json.loads((R / "main_job-cpu" / f"{variant}-seed{s}" / "run.json").read_text())["bleu"],
                R / "main_job-cpu" / f"{variant}-seed{s}") for s in (1, 2, 3)}


bo = reseed("base-bo", "base")
arms = {"guided alpha, meta lr tuned": reseed("alpha-meta-lr", "alpha"),
        "guided beta1, untuned (main job)": main_job("beta1"),
        "guided alpha+beta1, untuned (main job)": main_job("alpha+beta1"),
        "base, hand-tuned preset values (main job)": main_job("base")}
out = {"BO-selected": {s: b for s, (b, _) in bo.items()},
       **{name: {s: b for s, (b, _) in runs.items()} for name, runs in arms.items()}, "minus BO-selected": {}}
for name, runs in {"BO-selected": bo, **arms}.items():
    c = stats.mean_ci([b for b, _ in runs.values()])
    print(f"{name}: test BLEU {', '.join(f'{b:.2f}' for b, _ in runs.values())}; mean {c['mean']:.2f} "
          f"(sd {c['sd']:.2f}, 95% CI [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}])")
for name, runs in arms.items():
    c = tables.compare(bo, runs, raw, "test", "en")
    out["minus BO-selected"][name] = c
    d = c["delta"]
    print(f"{name} - BO-selected: {d['mean']:+.2f} (sd {d['sd']:.2f}, 95% CI [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]), "
          "per seed " + ", ".join(f"{v['delta']:+.2f} (p {v['p']:.3f})" for v in c["per_seed"].values())
          + f"; pooled paired bootstrap p {c['pooled']['p']:.3f}")
(R / "sweep-cpu" / "seeds" / "seeds.json").write_text(json.dumps(out, indent=1, default=str))
