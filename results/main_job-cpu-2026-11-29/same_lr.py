import json
from pathlib import Path
from guided_recipes import tables
R = Path("runs"); raw = Path("data/libreoffice-de-en/raw")
def runs(folder, name):
    return {s: (json.loads((R / folder / f"{name}-seed{s}" / "run.json").read_text())["bleu"], R / folder / f"{name}-seed{s}") for s in (1, 2, 3)}
sf01 = runs("study_lr-sensitivity-cpu", "schedulefree-lr0.01")
pairs = {"schedulefree(lr 0.01) - base(lr 0.01)": (runs("main_job-cpu", "base"), sf01),
         "schedulefree(lr 0.01) - alpha+beta1(lr 0.01)": (runs("main_job-cpu", "alpha+beta1"), sf01),
         "schedulefree(lr 0.01) - schedulefree(lr 0.0025, its default)": (runs("main_job-cpu", "schedulefree"), sf01)}
out = {k: tables.compare(a, b, raw, "test", "en") for k, (a, b) in pairs.items()}
for k, c in out.items():
    d = c["delta"]
    print(f"{k}: {d['mean']:+.2f} (sd {d['sd']:.2f}, 95% CI [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]), per seed "
          + ", ".join(f"{v['delta']:+.2f} (p {v['p']:.3f})" for v in c["per_seed"].values()) + f"; pooled paired bootstrap p {c['pooled']['p']:.3f}")
# run from the repository root: python results/main_job-cpu-2026-11-29/same_lr.py
json.dump(out, open(Path(__file__).parent / "lr_sensitivity_same_lr.json", "w"), indent=1, default=str)
