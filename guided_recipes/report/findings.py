"""findings.md: the paper's five claims, each with what this run found, its numbers and
whether the difference exceeds seed noise. Written from the report's JSON files only
(table1.json, alpha_courses.json, schedules.json, lr_sensitivity.json, groups.json, and the
sweep comparison's table2.json), so every number comes from the runs; a claim whose study is
missing says which command runs it.

Rules, stated in the file too, so a reader can check each verdict:
  noise        a mean difference over seeds exceeds seed noise when its 95% t interval
               excludes 0 (needs 2+ seeds); test-set noise: pooled paired bootstrap p < 0.05
  converge     beta1's final values across initial values span at most a quarter of the
               span of the initial values
  short horizon  at every meta lr, alpha ends below 1 having used at least half of the
               descent the meta lr allows (ln alpha_final <= -0.5 x meta lr x updates)
  lr sensitivity  a variant is less sensitive to the lr than base when, paired by seed, it
               scores above base beyond seed noise at every lr multiple other than 1x
  beat tuning  a guided row of the sweep comparison beats BO's tuned base on the sweep's one
               seed when its selected model's test BLEU is higher by sacrebleu's paired
               bootstrap (p < 0.05) at less compute; seed noise is not measured there
"""
import json
import math
from pathlib import Path

from . import stats
from .logkeys import learned_name

LOG_RESOLUTION = 1e-5  # guided values are logged with 6 decimals (fairseq_guided/guidance.py)
CLAIMS = {
    1: "guided beta1 beats the baseline",
    2: "learned beta1 converges to one decaying schedule from any initial value",
    3: "guided alpha alone shows short-horizon bias (falls to the lowest lr the meta lr allows)",
    4: "learning alpha together with beta1 changes alpha's course",
    5: "guided runs beat tuning",
}


def _load(report: Path, name: str):
    path = report / name
    return json.loads(path.read_text()) if path.is_file() else None


def _ci(c):
    return "no interval (one seed)" if c["ci"] is None else f"95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]"


def noise(c, pooled_p=None) -> str:
    """Verdict on a mean_ci of per-seed differences (and a pooled bootstrap p, if any)."""
    tail = "" if pooled_p is None else (f"; test-set noise: pooled paired bootstrap p = {pooled_p:.3f}"
                                        + (" < 0.05" if pooled_p < 0.05 else " >= 0.05"))
    if c["ci"] is None:
        return "seed noise: not measurable with one seed" + tail
    lo, hi = c["ci"]
    inside = lo <= 0 <= hi
    return ("within seed noise (the interval includes 0)" if inside else
            "exceeds seed noise (the interval excludes 0)") + tail


def paired(subset, label, c, detail, higher) -> str:
    """One sentence on a paired comparison of tables.compare: 'on `test` A - B = ... BLEU'."""
    return (f"on `{subset}` {label} = {c['delta']['mean']:+.2f} BLEU over {c['delta']['n']} seed(s)"
            f"{',' if detail[0] != '(' else ''} {detail}: {higher if c['delta']['mean'] > 0 else 'not ' + higher}, "
            + noise(c["delta"], c["pooled"]["p"]))


def claim1(table1):
    if not table1:
        return None
    parts = []
    for subset, entry in table1["subsets"].items():
        c = entry["vs_base"].get("beta1")
        if not c:
            continue
        per_seed = ", ".join(f"seed {s} {v['delta']:+.2f} (p {v['p']:.3f})" for s, v in c["per_seed"].items())
        parts.append(paired(subset, "beta1 - base", c, f"{_ci(c['delta'])} ({per_seed})", "higher"))
    return "; ".join(parts) if parts else None


def claim2(schedules):
    rows = [r for r in (schedules or {}).get("rows", []) if r["figure"] == "fig2" and r["final"] is not None]
    if not rows:
        return None
    parts = []
    for meta in sorted({r["values"]["meta_lr"] for r in rows}):
        by_init, bleu = {}, {}
        for r in rows:
            if r["values"]["meta_lr"] == meta:
                by_init.setdefault(r["values"]["beta1_init"], []).append(r["final"])
                if r.get("bleu") is not None:
                    bleu.setdefault(r["values"]["beta1_init"], []).append(r["bleu"])
        finals = {i: sum(v) / len(v) for i, v in sorted(by_init.items())}
        span_init = max(finals) - min(finals)
        span_final = max(finals.values()) - min(finals.values())
        seed_span = max(max(v) - min(v) for v in by_init.values())
        verdict = ("converged" if span_init > 0 and span_final <= 0.25 * span_init else "not converged")
        decays = [i for i, f in finals.items() if f < i]
        seeds = max(len(v) for v in by_init.values())
        parts.append(f"meta lr {meta:g}: final beta1 " + ", ".join(f"{f:.3f} from {i:g}" for i, f in finals.items())
                     + f"; span {span_final:.3f} of the initial {span_init:.3f}: {verdict}; "
                     + ("it decays from every init" if len(decays) == len(finals) else
                        "it decays from " + (", ".join(f"{i:g}" for i in decays) or "no init"))
                     + ("; test BLEU " + ", ".join(f"{sum(v) / len(v):.2f} from {i:g}" for i, v in sorted(bleu.items()))
                        if bleu else "")
                     + (f"; largest spread across seeds at one init {seed_span:.3f} ("
                        + ("the span across inits exceeds it" if span_final > seed_span else "the span across inits is within it")
                        + ")" if seeds > 1 else "; one seed: seed noise not measured"))
    return "; ".join(parts)


def claim3(schedules, table1):
    rows = [r for r in (schedules or {}).get("rows", []) if r["figure"] == "fig1" and r["final"] is not None]
    if not rows:
        return None
    parts, shown = [], 0
    metas = sorted({r["values"]["meta_lr"] for r in rows})
    for meta in metas:
        mine = [r for r in rows if r["values"]["meta_lr"] == meta]
        logs = [math.log(r["final"]) for r in mine]
        allowed = -meta * max(r["updates"] for r in mine)
        used = sum(logs) / len(logs) / allowed if allowed else 0.0
        shown += all(r["final"] < 1 for r in mine) and used >= 0.5
        spread = stats.mean_ci(logs)
        # the course matters as much as the end: a greedy step can push alpha up first
        peaks = ", ".join(f"{max(v for _, v in r['curve']):.3g} at update {max(r['curve'], key=lambda p: p[1])[0]}"
                          for r in mine if r.get("curve"))
        bleu = [r["bleu"] for r in mine if r.get("bleu") is not None]
        parts.append(f"meta lr {meta:g}: final alpha " + ", ".join(f"{r['final']:.3g} (seed {r['seed']})" for r in mine)
                     + f", lowest reachable {math.exp(allowed):.3g}, "
                     + (f"{used:.0%} of the allowed descent used" if used >= 0 else "it rose instead of falling")
                     + (f", sd of ln alpha over seeds {spread['sd']:.3f}" if spread["sd"] is not None else "")
                     + (f", highest {peaks}" if peaks else "")
                     + (f", test BLEU {sum(bleu) / len(bleu):.2f}" if bleu else ""))
    verdict = ("shown at every meta lr" if shown == len(metas) else "not shown at any meta lr" if not shown
               else f"shown at {shown} of {len(metas)} meta lrs")
    text = "; ".join(parts) + ": " + verdict
    c = (table1 or {}).get("subsets", {}).get("test", {}).get("vs_base", {}).get("alpha")
    if c:
        text += (f"; Table 1 alpha - base = {c['delta']['mean']:+.2f} BLEU on `test`, {_ci(c['delta'])}, "
                 + noise(c["delta"], c["pooled"]["p"]))
    return text


def claim4(courses):
    if not courses or not courses.get("alpha") or not courses.get("alpha+beta1"):
        return None
    seeds = sorted(set(courses["alpha"]) & set(courses["alpha+beta1"]), key=int)
    if not seeds:
        return None
    diffs = [math.log(courses["alpha+beta1"][s]["final"]) - math.log(courses["alpha"][s]["final"]) for s in seeds]
    c = stats.mean_ci(diffs)
    peak = {v: max(courses[v][s]["max"] for s in seeds) for v in ("alpha", "alpha+beta1")}
    per_seed = ", ".join(f"seed {s}: {courses['alpha'][s]['final']:.4g} alone vs "
                         f"{courses['alpha+beta1'][s]['final']:.4g} with beta1" for s in seeds)
    interval = "no interval (one seed)" if c["ci"] is None else f"95% CI [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
    # the logs round alpha to 6 digits: below that, seeds that agree are no evidence of a change
    verdict = ("no change at the logs' 6-digit resolution" if max(abs(d) for d in diffs) < LOG_RESOLUTION
               else noise(c))
    return (f"final alpha {per_seed}; ln(final with beta1) - ln(final alone) = {c['mean']:+.4f}, {interval}, "
            f"{verdict}; highest alpha reached: {peak['alpha']:.3g} alone, {peak['alpha+beta1']:.3g} with beta1 "
            f"(the paper's T5 runs: alpha rises above 1 early only when learned with beta1)")


def tuning_free(table1):
    """Beyond the paper (issue 16): guided beta1 and alpha+beta1 against each tuning-free arm."""
    parts = []
    for subset, entry in ((table1 or {}).get("subsets") or {}).items():
        for name, c in entry.get("vs_tuning_free", {}).items():
            guided, arm = name.split(" - ")
            sd = {v: entry["rows"][v]["sd"] for v in (guided, arm)}
            spread = ", ".join(f"{v} mean {entry['rows'][v]['mean']:.2f}"
                               + (f" sd {s:.2f}" if s is not None else "") for v, s in sd.items())
            parts.append(paired(subset, name, c, f"({spread}), {_ci(c['delta'])}", "higher"))
    return "; ".join(parts) if parts else None


def per_group(groups):
    """Beyond the paper (issue 14): alpha+beta1 with one value per parameter group against
    the global values and against the baseline, paired by seed; the groups' final values
    say where they went."""
    parts = []
    for name, c in ((groups or {}).get("vs_global") or {}).items():
        spec, other = name.split(" - ")
        finals = {}
        for r in groups["rows"]:
            if r["values"]["groups"] == spec and r["final"]:
                for field, v in r["final"].items():
                    finals.setdefault(learned_name(field), []).append(v)
        spread = ", ".join(f"{k} {min(v):.3g}-{max(v):.3g}" for k, v in finals.items())
        per_seed = ", ".join(f"seed {s} {v['delta']:+.2f} (p {v['p']:.3f})" for s, v in c["per_seed"].items())
        parts.append(paired("test", f"`{spec}` - {other}", c, f"{_ci(c['delta'])} ({per_seed})", "higher")
                     + (f"; final values over seeds: {spread}" if spread and other == "global" else ""))
    return "; ".join(parts) if parts else None


def lr_scale_differences(rows):
    """{variant: {lr_scale: mean_ci of per-seed BLEU(variant) - BLEU(base)}} for every
    non-base variant, paired by seed at the same multiple of its own base lr. Sensitivity is
    judged by these, not by spans (best minus worst mean): a variant whose 1x score is lower
    has a smaller span without scoring higher anywhere."""
    bleu = {(r["variant"], r["values"]["lr_scale"], r["seed"]): r["bleu"] for r in rows}
    out = {}
    for variant, scale, seed in bleu:
        if variant != "base" and ("base", scale, seed) in bleu:
            out.setdefault(variant, {}).setdefault(scale, []).append(bleu[variant, scale, seed] - bleu["base", scale, seed])
    return {v: {scale: stats.mean_ci(d) for scale, d in sorted(by_scale.items())} for v, by_scale in out.items()}


def versus_sweep(table2) -> str:
    """Claim 5 itself (the paper's Table 2): each guided row of the sweep comparison against
    BO's tuned base, by test BLEU and compute."""
    rows = {r["row"]: r for r in (table2 or {}).get("rows", [])}
    bo = rows.get("base-bo")
    if bo is None or bo["test_bleu"] is None:
        return None
    params = ", ".join(f"{k.split('.')[-1]} {v:.3g}" for k, v in bo["selected"]["params"].items())
    parts = [f"BO of base's static values ({bo['completed']} trials, {bo['wall_seconds'] / 60:.0f} min) selected "
             f"{params}: test BLEU {bo['test_bleu']:.2f}"]
    for name, r in rows.items():
        v = r.get("vs_bo")
        if v is None:
            continue
        tuned = "untuned" if r["trials"] == 1 else f"{r['completed']} trials"
        cheaper = r["wall_seconds"] < bo["wall_seconds"]
        verdict = ("beats BO's tuning on this seed" if v["delta"] > 0 and v["p"] < 0.05 and cheaper else
                   "below BO's tuning on this seed beyond test-set noise" if v["delta"] < 0 and v["p"] < 0.05 else
                   "within test-set noise of BO's tuning" if v["p"] >= 0.05 else "higher but not at less compute")
        parts.append(f"{name} ({tuned}, {r['wall_seconds'] / 60:.0f} min, {r['wall_seconds'] / bo['wall_seconds']:.2f}x "
                     f"BO's compute): test BLEU {r['test_bleu']:.2f}, {v['delta']:+.2f} (paired bootstrap p = "
                     f"{v['p']:.3f}): {verdict}")
    return ("the sweep comparison (`python scripts/sweep.py`, one seed per row: seed noise not measured there): "
            + "; ".join(parts))


def claim5(lr_rows, table2=None):
    rows = [r for r in (lr_rows or {}).get("rows", []) if r["bleu"] is not None]
    text = versus_sweep(table2) or "not run: the sweep comparison with Bayesian optimisation, `python scripts/sweep.py`"
    if not rows:
        return text + "; lr sensitivity not run either"
    parts = []
    for variant in dict.fromkeys(r["variant"] for r in rows):  # base, alpha+beta1, tuning-free arms
        by_lr = {}
        for r in rows:
            if r["variant"] == variant:
                by_lr.setdefault(r["values"]["lr"], []).append(r["bleu"])
        means = {lr: stats.mean_ci(v) for lr, v in sorted(by_lr.items())}
        parts.append(f"{variant}: " + ", ".join(f"lr {lr:g} {m['mean']:.2f}" + (f" (sd {m['sd']:.2f})" if m["sd"] is not None else "")
                                               for lr, m in means.items()))
    text += "; lr sensitivity (test BLEU): " + "; ".join(parts)
    for variant, by_scale in lr_scale_differences(rows).items():
        off = {scale: c for scale, c in by_scale.items() if scale != 1}
        text += f"; {variant} - base at the same lr multiple: " + ", ".join(
            f"{scale:g}x {c['mean']:+.2f} ({_ci(c)}, {noise(c).split(' (')[0]})" for scale, c in by_scale.items())
        if off:
            higher = all(c["ci"] is not None and c["ci"][0] > 0 for c in off.values())
            text += (f": {variant} is less sensitive to the lr (higher beyond seed noise at every other multiple)" if higher
                     else f": {variant} is not shown less sensitive to the lr (not higher beyond seed noise at every other multiple)")
    return text


def at_plateau(horizon):
    """Claim 1 at the calibrated plateau (issue 24), by the same rules as at 1,200 updates,
    and each other guided arm against base there."""
    if not horizon or not horizon.get("table", {}).get("subsets"):
        return None
    parts = []
    for subset, entry in horizon["table"]["subsets"].items():
        for arm, c in entry["vs_base"].items():
            per_seed = ", ".join(f"seed {s} {v['delta']:+.2f} (p {v['p']:.3f})" for s, v in c["per_seed"].items())
            parts.append(paired(subset, f"{arm} - base", c, f"{_ci(c['delta'])} ({per_seed})", "higher"))
    return (f"at {horizon['updates']} updates (the baseline's calibrated plateau; guidance {horizon['guidance']}, "
            f"meta lr {horizon['meta_lr']:.3g}): " + "; ".join(parts)) if parts else None


def guidance_batch(guidance):
    """The guidance ablation at 1,200 updates: each setting against base, and the choice."""
    rows = [r for r in (guidance or {}).get("rows", []) if r.get("vs_base")]
    if not rows:
        return None
    parts = [paired("test", f"{r['setting']} - base", r["vs_base"], _ci(r["vs_base"]["delta"]), "higher")
             + (f" (valid BLEU {r['valid']['mean']:.2f})" if "valid" in r else "") for r in rows]
    choice = guidance.get("choice")
    return "; ".join(parts) + (f"; chosen on validation BLEU: {choice['setting']}" if choice else "")


def write(report: Path, commands: dict, sweep_report: Path = None) -> Path:
    """report/findings.md; `commands` maps 'main', 'schedules', 'lr-sensitivity' to the
    command that runs each, for the claims whose study is missing; `sweep_report` is the
    sweep comparison's report folder (its table2.json), if one ran."""
    table1 = _load(report, "table1.json")
    schedules = _load(report, "schedules.json")
    lr_rows = _load(report, "lr_sensitivity.json")
    found = {1: (claim1(table1), "main"), 2: (claim2(schedules), "schedules"),
             3: (claim3(schedules, table1), "schedules"), 4: (claim4(_load(report, "alpha_courses.json")), "main"),
             5: (claim5(lr_rows, _load(sweep_report, "table2.json") if sweep_report else None), None)}
    lines = ["# Findings: the paper's claims at this scale", "",
             "Generated from the runs by guided_recipes/report/findings.py; no number here is typed by hand. Rules: "
             "a mean difference over seeds exceeds seed noise when its 95% t interval excludes 0 (2+ seeds); "
             "test-set noise is sacrebleu's paired bootstrap on all seeds' outputs pooled (p < 0.05); beta1 "
             "converged when its final values span at most a quarter of the initial values' span; short-horizon "
             "bias shown when alpha ends below 1 having used at least half of the descent its meta lr allows; "
             "a variant is less sensitive to the lr when, paired by seed, it scores above base beyond seed noise "
             "at every lr multiple other than 1x; a guided row of the sweep comparison beats BO's tuning on the sweep's "
             "one seed when its test BLEU is higher by the paired bootstrap (p < 0.05) at less compute.", ""]
    for k, title in CLAIMS.items():
        text, study = found[k]
        if text is None:
            text = f"not run: `{commands[study]}`"
        lines.append(f"**Claim {k}** ({title}): {text}.")
        lines.append("")
    versus = tuning_free(table1) or (f"not run: `{commands['main']} --with-tuning-free`" if "main" in commands
                                     else "not run")
    lines += ["**Beyond the paper** (guided tuning vs the tuning-free optimizers schedule-free AdamW and "
              f"Prodigy at their packages' defaults, same model, budget and seeds): {versus}.", ""]
    grouped = per_group(_load(report, "groups.json")) or (
        f"not run: `{commands['groups']}`" if "groups" in commands else "not run")
    lines += ["**Beyond the paper: per-group values** (alpha+beta1 learned per parameter group, `--guided-groups`, against "
              f"one global value each, same model, budget and seeds): {grouped}.", ""]
    horizon = at_plateau(_load(report, "horizon.json")) or (
        f"not run: `{commands['calibration']}`, then `{commands['horizon']}`" if "horizon" in commands else "not run")
    lines += [f"**Claim 1 at the plateau** ({CLAIMS[1]}, trained until the baseline's validation BLEU stops rising): "
              f"{horizon}.", ""]
    guided = guidance_batch(_load(report, "guidance.json")) or (
        f"not run: `{commands['guidance']}`" if "guidance" in commands else "not run")
    lines += [f"**The guidance batch** (guided beta1 at the main job's budget with other guidance batches and meta "
              f"lrs, paired by seed with base): {guided}.", ""]
    path = report / "findings.md"
    path.write_text("\n".join(lines))
    return path
