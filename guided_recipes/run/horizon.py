"""Issue 24's question, as three resumable studies of `scripts/main_job.py`: does guided
tuning pay off when training runs to its plateau?

  guidance     guided beta1 at the main job's 1,200 updates with other guidance batches:
               today's (one random 512-token sample, never refreshed), the paper's (one
               fixed batch the size of a training batch, 2,048 tokens), a new 512- or
               2,048-token sample at every meta step (--guidance-refresh step, cycling
               through the guide split), and today's at 0.1x and 0.3x the meta lr; each
               paired by seed with the main job's base. Scored on valid (the choice) and
               test (the report).
  calibration  the baseline, the preset's first seed, validated with BLEU every 500
               updates until the plateau: the first validation where the best validation
               BLEU has gained less than --plateau-gain over the last --plateau-window
               updates (cap --calibration-cap). Its update is the horizon.
  horizon      base, guided beta1 and alpha+beta1 per group (--guided-groups) for the
               horizon's updates, each validated with BLEU every 500 updates, with the
               guidance setting and meta lr that scored best on validation BLEU in the
               guidance study (meta lr x updates as the chosen setting had it at 1,200).

Each run's folder records the commit of every attempt. With --part-minutes a call stops
after the first checkpoint past its time and exits with PART_OVER (75); the same command
continues it. The statistics are the main job's (tables.compare, stats.mean_ci).
"""
import json
import math
from pathlib import Path

from . import nmt
from ..report import stats, tables
from ..report.logkeys import BLEU, NUM_UPDATES, WALL
from ..report.runlogs import log_rows
from .studies import Setting, _g, preset_values

STUDIES = ("guidance", "calibration", "horizon")
PART_OVER = 75  # EX_TEMPFAIL: stopped for time, the same command goes on
DEFAULTS = {"plateau_gain": 0.3, "plateau_window": 2000, "calibration_cap": 12000, "validate_every": 500}
RULE = 3.0  # the presets' meta lr x updates (configs/nmt/cpu.yaml)
BLEU_VALIDATION = {"task.eval_bleu": "true", "task.eval_bleu_args": "'{\"beam\": 4, \"max_len_a\": 1.2, \"max_len_b\": 10}'",
                   "task.eval_bleu_remove_bpe": "sentencepiece", "task.eval_bleu_detok": "space"}


def override(preset, key: str, value) -> str:
    """A hydra override of the preset's config; '++' sets a key its yaml lacks (whether or
    not fairseq's schema for that section has it)."""
    section, name = key.split(".", 1)
    return f"{'' if name in preset.config.get(section, {}) else '++'}{key}={value}"


def validated_every(preset, updates: int, every: int) -> tuple:
    """Overrides that validate with BLEU (beam 4, as the test scoring) and save a
    checkpoint every `every` updates, for `updates` updates."""
    return (override(preset, "optimization.max_update", updates),
            override(preset, "dataset.validate_interval_updates", every),
            override(preset, "checkpoint.save_interval_updates", every),
            override(preset, "checkpoint.keep_interval_updates", 1),
            *(override(preset, k, v) for k, v in BLEU_VALIDATION.items()))


def guidance_settings(preset) -> list:
    """The guidance ablation's guided beta1 settings and the base they are paired with."""
    meta = preset_values(preset)["meta_lr"]
    tokens = int(preset.config["task"].get("guidance_max_tokens") or preset.config["dataset"]["max_tokens"])
    train_tokens = int(preset.config["dataset"]["max_tokens"])

    def one(name, guide_tokens, refresh, scale):
        overrides = []
        if guide_tokens != tokens:
            overrides.append(override(preset, "task.guidance_max_tokens", guide_tokens))
        if refresh != "never":
            overrides.append(override(preset, "task.guidance_refresh", refresh))
        if scale != 1:
            overrides.append(f"optimizer.guided_meta_lr={_g(meta * scale)}")
        return Setting(name, "guidance", "beta1", {"guide_tokens": guide_tokens, "refresh": refresh,
                                                   "meta_lr_scale": scale, "meta_lr": meta * scale}, tuple(overrides))

    return [Setting("base", "guidance", "base", {}),
            one("beta1", tokens, "never", 1.0),  # today's: the main job's own runs when it has them
            one(f"beta1-guide{train_tokens}-never", train_tokens, "never", 1.0),
            one(f"beta1-guide{tokens}-step", tokens, "step", 1.0),
            one(f"beta1-guide{train_tokens}-step", train_tokens, "step", 1.0),
            one(f"beta1-metalr{_g(meta * 0.1)}", tokens, "never", 0.1),
            one(f"beta1-metalr{_g(meta * 0.3)}", tokens, "never", 0.3)]


def calibration_setting(preset, options) -> Setting:
    return Setting("base-calibration", "calibration", "base",
                   {"cap": options["calibration_cap"], "every": options["validate_every"]},
                   validated_every(preset, options["calibration_cap"], options["validate_every"]))


def plateau(curve, window, gain):
    """The first validation update u (with one at u - window) where the best BLEU up to u
    exceeds the best up to u - window by less than `gain`; None before it."""
    best, out = {}, None
    top = -math.inf
    for update, bleu in sorted(curve):
        top = max(top, bleu)
        best[update] = top
        if update - window in best and top - best[update - window] < gain:
            out = update
            break
    return out


def valid_curve(run: Path):
    """[(update, valid BLEU)] from the run's train.log (fairseq --eval-bleu rows)."""
    log = run / "train.log"
    rows = log_rows(log, "valid") if log.is_file() else []
    return [(int(r[NUM_UPDATES]), float(r[BLEU])) for r in rows if BLEU in r]


def wall_at(run: Path, updates):
    """Seconds of training (fairseq's `wall`, carried over a resume) at each update, read
    from the train_inner row at or just before it."""
    rows = [(int(r[NUM_UPDATES]), float(r[WALL])) for r in log_rows(run / "train.log", "train_inner")
            if WALL in r]
    out = []
    for u in updates:
        before = [w for n, w in rows if n <= u]
        out.append(before[-1] if before else None)
    return out


def plateau_watch(run: Path, options):
    """run_logged watch of the calibration: once a validation shows the plateau, stop at the
    checkpoint saved for that update."""
    state = {}

    def watch(line):
        if "valid" in line and "bleu" in line and "plateau" not in state:
            found = plateau(valid_curve(run), options["plateau_window"], options["plateau_gain"])
            if found is not None:
                state["plateau"] = found
        if "plateau" in state and nmt.SAVED in line and f"@ {state['plateau']} updates" in line:
            return f"plateau at update {state['plateau']}"
        return None

    return watch


def reopen_calibration(run: Path, options) -> bool:
    """A calibration that reached its cap without a plateau goes on when the cap is raised.
    The preset's inverse-sqrt schedule does not depend on max_update, so the longer run is
    this run continued from its last checkpoint. Scores of the shorter run (cached in
    run.json, which evaluate() would return as the longer run's) move, with their
    hypotheses, to `at-<update>/` and run.json's 'earlier_scores'."""
    info = nmt.run_info(run)
    cap = info.get("cap")
    if (not info.get("trained") or cap is None or cap >= options["calibration_cap"]
            or plateau(valid_curve(run), options["plateau_window"], options["plateau_gain"]) is not None):
        return False
    scores = {k: info.pop(k) for k in list(info) if k.startswith("bleu")}
    if scores:
        keep = run / f"at-{cap}"
        keep.mkdir(exist_ok=True)
        for f in list(run.glob("*.hyp.*")) + list(run.glob("generate-*.out")):
            f.rename(keep / f.name)
        info["earlier_scores"] = dict(info.get("earlier_scores", {}), **{str(cap): scores})
    info["trained"] = False
    info["reopened"] = info.get("reopened", []) + [{"cap": cap, "new_cap": options["calibration_cap"]}]
    (run / "run.json").write_text(json.dumps(info, indent=1))
    return True


def calibration_report(run: Path, options, preset) -> dict:
    curve = valid_curve(run)
    found = plateau(curve, options["plateau_window"], options["plateau_gain"])
    info = nmt.run_info(run)
    best = []
    for _, bleu in curve:
        best.append(max(bleu, best[-1]) if best else bleu)
    return {"rule": f"the first validation where the best valid BLEU gained less than {options['plateau_gain']:g} "
                    f"over the last {options['plateau_window']} updates (cap {options['calibration_cap']})",
            "curve": [{"update": u, "bleu": b, "best": m} for (u, b), m in zip(curve, best)],
            "plateau_update": found, "trained": bool(info.get("trained")), "run": str(run),
            "failed": found is None and bool(info.get("trained")),
            "horizon": found, "meta_lr_rule": RULE, "meta_lr": RULE / found if found else None,
            "preset_meta_lr": preset_values(preset)["meta_lr"], "commit": info.get("commit"),
            "train_seconds": info.get("train_seconds")}


def load(report: Path, name: str):
    path = report / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def chosen_guidance(report: Path):
    """The guidance study's choice: the guided setting with the highest mean valid BLEU."""
    data = load(report, "guidance")
    return None if not data or not data.get("choice") else data["choice"]


def horizon_settings(preset, options, report: Path) -> list:
    calibration = load(report, "calibration")
    if not calibration or not calibration.get("horizon"):
        raise SystemExit("[main_job] --study horizon needs the calibrated horizon: run --study calibration first "
                         f"(no plateau in {report / 'calibration.json'})")
    choice = chosen_guidance(report)
    if choice is None:
        raise SystemExit("[main_job] --study horizon needs the guidance study's choice: run --study guidance first "
                         f"({report / 'guidance.json'})")
    updates = int(calibration["horizon"])
    every = options["validate_every"]
    # the chosen setting's meta lr x updates, carried to the longer run
    meta = choice["values"]["meta_lr"] * nmt.PRESETS[preset.name].max_update / updates
    guide = [f"optimizer.guided_meta_lr={_g(meta)}", *[o for o in choice["overrides"] if "guided_meta_lr" not in o]]
    common = validated_every(preset, updates, every)
    # escaped: a bare comma is a hydra sweep
    groups = override(preset, "optimizer.guided_groups", options["guided_groups"].replace(",", "\\,"))
    slug = "".join(c if c.isalnum() else "_" for c in options["guided_groups"])
    values = {"updates": updates, "meta_lr": meta, "guidance": choice["setting"]}
    out = [Setting("base", "horizon", "base", dict(values, arm="base"), common),
           Setting("beta1", "horizon", "beta1", dict(values, arm="beta1"), common + tuple(guide)),
           Setting(f"alpha+beta1-groups_{slug}", "horizon", "alpha+beta1",
                   dict(values, arm=f"alpha+beta1 groups {options['guided_groups']}"), common + tuple(guide) + (groups,))]
    if options.get("with_global"):
        out.append(Setting("alpha+beta1", "horizon", "alpha+beta1", dict(values, arm="alpha+beta1 global"),
                           common + tuple(guide)))
    return out


def settings(study, preset, options, report: Path) -> list:
    if study == "guidance":
        return guidance_settings(preset)
    if study == "calibration":
        return [calibration_setting(preset, options)]
    return horizon_settings(preset, options, report)


def run_folder(study_runs: Path, setting: Setting, seed: int, main_runs: Path, report: Path) -> Path:
    """The setting's folder. Without overrides it is the main job's run when that one has
    trained (the same command). The horizon's base at the calibration's seed is the
    calibration run itself when it stopped at the horizon (the same command up to there)."""
    if not setting.overrides:
        shared = main_runs / f"{setting.variant}-seed{seed}"
        if nmt.run_info(shared).get("trained") and not nmt.run_info(shared).get("overrides"):
            return shared
    if setting.figure == "horizon" and setting.name == "base":
        calibration = load(report, "calibration") or {}
        run = Path(calibration.get("run", "/nonexistent"))
        if (nmt.run_info(run).get("seed") == seed and calibration.get("horizon") == setting.values["updates"]
                and nmt.run_info(run).get("stopped") == f"plateau at update {setting.values['updates']}"):
            return run
    return study_runs / f"{setting.name}-seed{seed}"


def subsets_of(setting: Setting) -> list:
    """What each run is scored on: guided settings of the guidance study on valid too (the
    choice is made there, never on test); horizon runs on both test sets."""
    if setting.figure == "guidance":
        return ["test"] + (["valid"] if setting.variant != "base" else [])
    if setting.figure == "horizon":
        return ["test", "test_debian"]
    return ["test"]


def _scores(plan, subset):
    """{setting name: {seed: (BLEU, run)}} of the runs scored on `subset`."""
    out = {}
    for setting, seed, run in plan:
        bleu = nmt.run_info(run).get(nmt.bleu_key(subset))
        if bleu is not None:
            out.setdefault(setting.name, {})[seed] = (bleu, run)
    return out


def seconds(run: Path):
    return nmt.run_info(run).get("train_seconds")


def guidance_report(plan, raw: Path, tgt: str) -> dict:
    test, valid = _scores(plan, "test"), _scores(plan, "valid")
    by_name = {s.name: s for s, _, _ in plan}
    rows = []
    for name, setting in by_name.items():
        if name not in test:
            continue
        row = {"setting": name, "values": setting.values, "overrides": list(setting.overrides),
               "test": dict(stats.mean_ci([b for b, _ in test[name].values()]),
                            bleu={str(s): b for s, (b, _) in sorted(test[name].items())})}
        if name in valid:
            row["valid"] = dict(stats.mean_ci([b for b, _ in valid[name].values()]),
                                bleu={str(s): b for s, (b, _) in sorted(valid[name].items())})
        row["train_seconds"] = stats.mean_ci([seconds(r) for _, r in test[name].values() if seconds(r)] or [0])
        if name != "base" and "base" in test:
            row["vs_base"] = tables.compare(test["base"], test[name], raw, "test", tgt)
        rows.append(row)
    guided = [r for r in rows if r["setting"] != "base" and "valid" in r]
    # a mean over fewer seeds is no match for one over all of them: choose when every guided
    # setting has every seed of the plan scored on valid
    planned = {s.name: {seed for t, seed, _ in plan if t.name == s.name} for s, _, _ in plan if s.variant != "base"}
    complete = all(set(valid.get(name, {})) == seeds for name, seeds in planned.items())
    choice = None
    if guided and complete:
        pick = max(guided, key=lambda r: r["valid"]["mean"])
        means = ", ".join(f"{r['setting']} {r['valid']['mean']:.2f}" for r in guided)
        choice = {"setting": pick["setting"], "values": pick["values"], "overrides": pick["overrides"],
                  "valid_mean": pick["valid"]["mean"],
                  "why": f"the highest mean validation BLEU over seeds among the guided settings ({means}); "
                         "test BLEU played no part"}
    pending = sorted(f"{name} ({len(seeds - set(valid.get(name, {})))} seed(s))" for name, seeds in planned.items()
                     if seeds - set(valid.get(name, {})))
    return {"rows": rows, "choice": choice, "pending": pending, "method": tables.METHOD}


def guidance_markdown(data) -> str:
    out = ["| setting | guide tokens | refresh | meta lr | valid BLEU mean (sd) | test BLEU per seed | test mean | "
           "sd | 95% CI | minus base (mean, 95% CI) | per seed delta (p) | pooled p | train s |",
           "|" + "---|" * 13]
    for r in data["rows"]:
        v, t, c = r.get("values", {}), r["test"], r.get("vs_base")
        valid = f"{r['valid']['mean']:.2f} ({r['valid']['sd'] or 0:.2f})" if "valid" in r else "-"
        vs = (f"{c['delta']['mean']:+.2f} {tables._interval(c['delta']['ci'])}" if c else "-")
        seeds = (", ".join(f"{x['delta']:+.2f} ({x['p']:.3f})" for x in c["per_seed"].values()) if c else "-")
        out.append(f"| {r['setting']} | {v.get('guide_tokens', '-')} | {v.get('refresh', '-')} | "
                   f"{_g(v['meta_lr']) if 'meta_lr' in v else '-'} | {valid} | "
                   f"{', '.join(f'{b:.2f}' for b in t['bleu'].values())} | {t['mean']:.2f} | "
                   f"{tables._num(t['sd'])} | {tables._interval(t['ci'])} | {vs} | {seeds} | "
                   f"{c['pooled']['p']:.3f} | {r['train_seconds']['mean']:.0f} |" if c else
                   f"| {r['setting']} | - | - | - | {valid} | {', '.join(f'{b:.2f}' for b in t['bleu'].values())} | "
                   f"{t['mean']:.2f} | {tables._num(t['sd'])} | {tables._interval(t['ci'])} | - | - | - | "
                   f"{r['train_seconds']['mean']:.0f} |")
    if data["choice"]:
        out += ["", f"Chosen for the horizon study: **{data['choice']['setting']}**, {data['choice']['why']}."]
    elif data.get("pending"):
        out += ["", "No choice yet: not every guided setting has all its seeds scored on valid (missing: "
                + ", ".join(data["pending"]) + ")."]
    return "\n".join(out + ["", data["method"]]) + "\n"


def horizon_table(plan, raw: Path, tgt: str) -> dict:
    """Table 1 at the horizon in tables.table1's form (so tables.markdown prints it)."""
    out = {"method": tables.METHOD, "subsets": {}}
    arms = {s.name: s.values["arm"] for s, _, _ in plan}
    for subset, about in tables.SUBSETS.items():
        scores = {arms[name]: runs for name, runs in _scores(plan, subset).items()}
        if not scores:
            continue
        rows = {a: dict(stats.mean_ci([b for b, _ in r.values()]), bleu={str(s): b for s, (b, _) in sorted(r.items())})
                for a, r in scores.items()}
        entry = {"about": about, "rows": rows, "sentences": len(tables._lines(raw / f"{subset}.{tgt}")),
                 "vs_base": {a: tables.compare(scores["base"], r, raw, subset, tgt)
                             for a, r in scores.items() if a != "base" and "base" in scores}}
        out["subsets"][subset] = entry
    return out


def curves(plan) -> list:
    """Every run's validation BLEU by update and by seconds of training."""
    out = []
    for setting, seed, run in plan:
        curve = valid_curve(run)
        walls = wall_at(run, [u for u, _ in curve]) if curve else []
        out.append({"arm": setting.values["arm"], "seed": seed, "run": str(run),
                    "points": [{"update": u, "bleu": b, "wall": w} for (u, b), w in zip(curve, walls)]})
    return out


def side_by_side(report: Path, table: dict, options) -> list:
    """Each arm's test BLEU and difference to base at 1,200 updates (the main job's Table 1
    and groups study) and at the horizon."""
    short = {}
    t1 = (load(report, "table1") or {}).get("subsets", {}).get("test", {})
    for arm in ("base", "beta1"):
        if arm in t1.get("rows", {}):
            short[arm] = (t1["rows"][arm], t1.get("vs_base", {}).get(arm))
    groups = load(report, "groups") or {}
    spec = options["guided_groups"]
    grouped = [r["bleu"] for r in groups.get("rows", []) if r["values"].get("groups") == spec and r["bleu"] is not None]
    if grouped:
        short[f"alpha+beta1 groups {spec}"] = (stats.mean_ci(grouped), groups.get("vs_global", {}).get(f"{spec} - base"))
    if "alpha+beta1" in t1.get("rows", {}):
        short["alpha+beta1 global"] = (t1["rows"]["alpha+beta1"], t1["vs_base"].get("alpha+beta1"))
    long = table["subsets"].get("test", {})
    rows = []
    for arm in long.get("rows", {}):
        row = {"arm": arm, "horizon": long["rows"][arm], "horizon_vs_base": long["vs_base"].get(arm)}
        if arm in short:
            row["short"], row["short_vs_base"] = short[arm]
        rows.append(row)
    return rows
