"""The main job: on the real offline de-en corpus, train baseline LAMB and guided alpha,
beta1 and alpha+beta1 with the same budget and seeds, score each with fairseq-generate
(beam 4) and sacrebleu on two test sets (LibreOffice help, in domain, and held-out Debian
package descriptions), and write a report folder: Table 1 with seed statistics and paired
bootstrap tests, plots of the learned schedules and loss curves, findings.md (the paper's
five claims), the exact commands.

    python scripts/main_job.py                 # CPU preset (configs/nmt/cpu.yaml): Table 1
    python scripts/main_job.py --preset gpu    # one GPU, the four variants at once
    python scripts/main_job.py --study schedules        # Figures 1 and 2 (learned curves)
    python scripts/main_job.py --study lr-sensitivity   # base vs alpha+beta1 at 1/4x, 1x, 4x lr
    python scripts/main_job.py --with-tuning-free       # + schedule-free AdamW and Prodigy arms
    python scripts/main_job.py --study groups           # alpha+beta1 per parameter group vs global
    python scripts/main_job.py --study guidance         # guided beta1 with other guidance batches
    python scripts/main_job.py --study calibration      # the baseline until its validation BLEU plateaus
    python scripts/main_job.py --study horizon          # Table 1 at that plateau (guided_recipes.horizon)

Each study trains into runs/study_NAME-PRESET (beside the main job's runs folder) and
writes its tables and plots into the main job's report folder, then rewrites findings.md.
Resumable: a finished run or evaluation is skipped, an interrupted run continues from its
last checkpoint, so the same command picks up where a stopped job left off.
"""
import argparse
import json
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import corpus, horizon, horizon_job, nmt as nmt_recipe, studies
from ..common import floats, runs_folder, sayer
from ..report import findings, plots as plot_schedules, study_plots
from ..report import tables as compare_table
from ..report.logkeys import ALPHA, BETA1, LEARNED_PREFIX
from ..report.runlogs import learned_curve, learned_curves

say = sayer("main_job")
prepare = corpus.prepare  # the corpus, as results/horizon-cpu-2026-12-02/README.md calls it


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=[n for n, p in nmt_recipe.PRESETS.items() if p.corpus == "offline"],
                        default="cpu")
    parser.add_argument("--study", choices=studies.STUDIES + horizon.STUDIES, default=None,
                        help="run a study instead of Table 1 (see above)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the offline corpus goes (default: data/libreoffice-de-en[-VOCAB])")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: runs/main_job-PRESET)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's; "
                        "--study schedules: its first)")
    parser.add_argument("--with-tuning-free", action="store_true",
                        help="add the tuning-free optimizers of configs/nmt/tuning_free.yaml (schedule-free "
                             "AdamW, Prodigy, at their packages' defaults) as arms: to Table 1, or to "
                             "--study lr-sensitivity at the same multiples of their own lr; runs already "
                             "trained are kept, so this extends a finished main job")
    parser.add_argument("--quiet", action="store_true", help="keep fairseq's own output in the run logs only")
    parser.add_argument("--no-prepare", action="store_true",
                        help="use the corpus already prepared in --data-dir as it is (a machine without "
                             "Debian's archive, e.g. the GPU machine with the corpus carried over)")
    parser.add_argument("--guided-groups", default="embed,encoder,decoder",
                        help="--study groups: the grouping its grouped runs learn with (fairseq_guided's "
                             "--guided-groups: module prefixes, 'layer', or NAME=REGEX;...)")
    long = parser.add_argument_group("the guidance, calibration and horizon studies (guided_recipes.horizon)")
    long.add_argument("--part-minutes", type=float, default=None,
                      help="stop after the first checkpoint past this many minutes (exit code "
                           f"{horizon.PART_OVER}); the same command continues. Default: no limit")
    long.add_argument("--plateau-gain", type=float, default=horizon.DEFAULTS["plateau_gain"],
                      help="calibration: the plateau is where the best valid BLEU gained less than this "
                           "(default %(default)s) ...")
    long.add_argument("--plateau-window", type=int, default=horizon.DEFAULTS["plateau_window"],
                      help="... over the last this many updates (default %(default)s)")
    long.add_argument("--calibration-cap", type=int, default=horizon.DEFAULTS["calibration_cap"],
                      help="calibration: stop here without a plateau, a failed calibration (default %(default)s)")
    long.add_argument("--validate-every", type=int, default=horizon.DEFAULTS["validate_every"],
                      help="calibration and horizon runs: validate (BLEU) and save every this many updates "
                           "(default %(default)s)")
    long.add_argument("--with-global", action="store_true",
                      help="horizon: add alpha+beta1 with one global value each")
    grid = parser.add_argument_group("study grids (sizes; defaults are the paper's settings at this scale)")
    for name, default in studies.DEFAULTS.items():
        grid.add_argument("--" + name.replace("_", "-"), type=floats, default=default,
                          help=f"comma-separated (default {','.join(f'{x:g}' for x in default)})")
    args = parser.parse_args()
    for flag in ("plateau_window", "calibration_cap", "validate_every"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1; got {getattr(args, flag)}")
    if args.plateau_window % args.validate_every:
        parser.error(f"--plateau-window {args.plateau_window} must be a multiple of --validate-every "
                     f"{args.validate_every} (the plateau compares two validations)")
    if args.part_minutes is not None and args.part_minutes <= 0:
        parser.error(f"--part-minutes must be > 0; got {args.part_minutes}")
    return args


def commands(preset: str) -> dict:
    base = f"python scripts/main_job.py --preset {preset}"
    return {"main": base, **{study: f"{base} --study {study}" for study in studies.STUDIES + horizon.STUDIES}}


def evaluate_all(preset, plan, data, raw, first_stage, stages, subsets, times):
    """Score every (label, run) of the plan on every subset; one stage each."""
    stage = first_stage
    for label, run in plan:
        for subset in subsets:
            t0 = time.time()
            say(f"stage {stage}/{stages}: evaluate {label} on {subset} (beam 4, sacrebleu)")
            bleu = nmt_recipe.evaluate(data, raw, run, preset, subset=subset)
            times[f"evaluate {label} on {subset}"] = time.time() - t0
            say(f"stage {stage}/{stages}: {label} on {subset}: BLEU {bleu:.2f} ({time.time() - t0:.0f} s)")
            stage += 1


def train_all(preset, plan, data, first_stage, stages, echo, times):
    """Train every (label, run, variant, seed, overrides, info); one stage each."""
    def one(i, label, run, variant, seed, overrides, info):
        t0 = time.time()
        say(f"stage {first_stage + i}/{stages}: train {label} (run {i + 1} of {len(plan)})")
        ran = nmt_recipe.train(data, run, variant, seed, preset, echo=echo and preset.parallel == 1,
                               overrides=overrides, info=info)
        times[f"train {label}"] = time.time() - t0
        say(f"stage {first_stage + i}/{stages}: train {label} "
            + (f"done in {time.time() - t0:.0f} s" if ran else "had finished before: skipped"))

    with ThreadPoolExecutor(max_workers=preset.parallel) as pool:  # each run is a subprocess
        for future in [pool.submit(one, i, *p) for i, p in enumerate(plan)]:
            future.result()


def alpha_courses(runs: Path) -> dict:
    """{variant: {seed: {final, max, updates}}} of alpha in the alpha and alpha+beta1 runs."""
    out = {}
    for variant in ("alpha", "alpha+beta1"):
        for run in sorted(runs.glob(f"{variant}-seed*")):
            curve = learned_curve(run, ALPHA)
            if curve and nmt_recipe.run_info(run).get("variant") == variant:
                out.setdefault(variant, {})[str(nmt_recipe.run_info(run)["seed"])] = {
                    "final": curve[-1][1], "max": max(v for _, v in curve), "updates": curve[-1][0]}
    return out


def table1_variants(args) -> list:
    return [*nmt_recipe.VARIANTS, *(nmt_recipe.TUNING_FREE if args.with_tuning_free else ())]


def table1_stages(args, seeds, subsets):
    return 1 + len(seeds) * len(table1_variants(args)) * (1 + len(subsets)) + 1


def table1_job(args, preset, seeds, data, raw, runs, report, prepare_cmd, times, subsets):
    plan = [(v, s) for s in seeds for v in table1_variants(args)]
    stages = table1_stages(args, seeds, subsets)
    train_all(preset, [(f"{v}, seed {s}", runs / f"{v}-seed{s}", v, s, (), None) for v, s in plan], data, 2,
              stages, not args.quiet, times)
    evaluate_all(preset, [(f"{v}, seed {s}", runs / f"{v}-seed{s}") for v, s in plan], data, raw,
                 2 + len(plan), stages, subsets, times)
    say(f"stage {stages}/{stages}: report in {report}")
    report.mkdir(parents=True, exist_ok=True)
    data1 = compare_table.table1(runs, raw, nmt_recipe.language_pair(data)[1])
    (report / "table1.json").write_text(json.dumps(data1, indent=1))
    table = compare_table.markdown(data1)
    (report / "bleu_table.md").write_text(table)
    (report / "alpha_courses.json").write_text(json.dumps(alpha_courses(runs), indent=1))
    plots = plot_schedules.plot(runs, report)
    cmds = [f"# prepare\n{shlex.join(prepare_cmd)}\n"]
    cmds += [(runs / f"{v}-seed{s}" / "commands.sh").read_text() for v, s in plan]
    (report / "commands.sh").write_text("\n".join(cmds))
    print(table, end="")
    return [report / "bleu_table.md", report / "table1.json", *plots, report / "commands.sh"]


def study_rows(study, plan):
    rows = studies.results(study, [(s, seed, run) for s, seed, run in plan])
    for row, (setting, _, run) in zip(rows, plan):
        if setting.figure == "groups":  # every learned value: 'guided_alpha' or 'guided_alpha/GROUP'
            row["curves"] = learned_curves(run, LEARNED_PREFIX)
            row["final"] = {k: v[-1][1] for k, v in row["curves"].items()} or None
            continue
        key = {"fig1": ALPHA, "fig2": BETA1}.get(setting.figure)
        curve = learned_curve(run, key) if key else []
        start = {"fig1": 1.0, "fig2": setting.values.get("beta1_init")}.get(setting.figure)
        if curve:  # the configured initial value, before the first logged update
            curve = [(0, start)] + curve
        row.update(curve=curve, final=curve[-1][1] if curve else None, updates=curve[-1][0] if curve else 0)
    return rows


def study_plan(args, preset, seeds, runs):
    """[(setting, seed, run folder)] of the study, and the folder of its own runs."""
    options = {k: getattr(args, k) for k in studies.DEFAULTS}
    if args.study == "groups":
        options = {"guided_groups": args.guided_groups}
    study_runs = runs_folder(f"study_{args.study}", args.preset, runs.parent)
    return [(s, seed, studies.run_folder(study_runs, s, seed, runs))
            for s in studies.settings(args.study, preset, options, args.with_tuning_free) for seed in seeds], \
        study_runs, options


def _value(x, fmt):
    if isinstance(x, dict):  # per-group finals
        return ", ".join(f"{k[len(LEARNED_PREFIX):]} {v:{fmt}}" for k, v in x.items())
    return "-" if x is None else format(x, fmt)


def versus_global(plan, main_runs, raw, tgt) -> dict:
    """The groups study's paired tests, seed by seed (tables.compare: per-seed deltas, their
    t interval, pooled paired bootstrap): grouped minus global alpha+beta1, and grouped
    minus the main job's baseline where it has scored one."""
    by = {}
    for setting, seed, run in plan:
        bleu = nmt_recipe.run_info(run).get("bleu")
        if bleu is not None:
            by.setdefault(setting.values["groups"], {})[seed] = (bleu, run)
    others = {"global": by.pop("global", {}), "base": {}}
    for seed in {seed for _, seed, _ in plan}:
        bleu = nmt_recipe.run_info(main_runs / f"base-seed{seed}").get("bleu")
        if bleu is not None:
            others["base"][seed] = (bleu, main_runs / f"base-seed{seed}")
    return {f"{spec} - {name}": compare_table.compare(other, runs, raw, "test", tgt)
            for spec, runs in by.items() for name, other in others.items() if set(runs) & set(other)}


def study_job(args, preset, seeds, data, raw, runs, report, times):
    plan, study_runs, options = study_plan(args, preset, seeds, runs)
    new = [p for p in plan if not nmt_recipe.run_info(p[2]).get("trained")]
    unscored = [p for p in plan if "bleu" not in nmt_recipe.run_info(p[2])]
    say(f"study {args.study}: {len(plan)} runs ({len(new)} to train, {len(unscored)} to score) in {study_runs}; "
        + studies.estimate(report, len(new), len(unscored)))
    stages = 1 + 2 * len(plan) + 1
    train_all(preset, [(f"{s.name}, seed {seed}", run, s.variant, seed, s.overrides,
                        {"setting": s.name, **s.values}) for s, seed, run in plan], data, 2, stages,
              not args.quiet, times)
    evaluate_all(preset, [(f"{s.name}, seed {seed}", run) for s, seed, run in plan], data, raw, 2 + len(plan),
                 stages, ["test"], times)
    say(f"stage {stages}/{stages}: report in {report}")
    report.mkdir(parents=True, exist_ok=True)
    rows = study_rows(args.study, plan)
    name = args.study.replace("-", "_")
    extra = ({"vs_global": versus_global(plan, runs, raw, nmt_recipe.language_pair(data)[1])}
             if args.study == "groups" else {})
    (report / f"{name}.json").write_text(json.dumps({"preset": args.preset, "seeds": seeds, "options": options,
                                                     "rows": rows, **extra}, indent=1))
    table = ["| setting | seed | learned value at the end | BLEU (test) | run |", "|---|---|---|---|---|"]
    table += [f"| {r['setting']} | {r['seed']} | {_value(r['final'], '.4g')} | {_value(r['bleu'], '.2f')} | "
              f"{r['run']} |" for r in rows]
    (report / f"{name}.md").write_text("\n".join(table) + "\n")
    (report / f"commands_{name}.sh").write_text("\n".join(
        (run / "commands.sh").read_text() for _, _, run in plan if (run / "commands.sh").is_file()))
    plot = {"schedules": study_plots.schedules, "lr-sensitivity": study_plots.lr_sensitivity,
            "groups": study_plots.groups}[args.study]
    return [report / f"{name}.md", report / f"{name}.json", *plot(rows, report)]


def expects_debian_test(preset) -> bool:
    """prepare_offline_corpus.sh makes test_debian unless told not to (or trained on Debian)."""
    opts = list(preset.data_options)
    size = opts[opts.index("--debian-test-size") + 1] if "--debian-test-size" in opts else None
    return "--with-debian" not in opts and size != "0"


def main():
    args = parse_args()
    preset = nmt_recipe.PRESETS[args.preset]
    # the schedules study plots curves, one run a setting as in the paper's figures
    default_seeds = preset.seeds[:1] if args.study == "schedules" else preset.seeds
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(default_seeds)
    data_dir = corpus.data_dir(preset, args.data_dir)
    runs = args.runs or runs_folder("main_job", args.preset)
    report = runs / "report"
    start, times = time.time(), {}
    subsets = ["test"] + (["test_debian"] if expects_debian_test(preset) and not args.study else [])
    stages = (3 if args.study in horizon.STUDIES else 1 + 2 * len(study_plan(args, preset, seeds, runs)[0]) + 1
              if args.study else table1_stages(args, seeds, subsets))
    say(f"stage 1/{stages}: prepare the offline de-en corpus in {data_dir}")
    if args.no_prepare:
        if not corpus.prepared(data_dir):
            raise SystemExit(f"--no-prepare: no prepared corpus (bin/ and raw/) in {data_dir}")
        prepare_cmd = ["# --no-prepare: the corpus in", str(data_dir)]
    else:
        prepare_cmd = corpus.prepare(data_dir, preset)
    times["prepare"] = time.time() - start
    say(f"stage 1/{stages}: prepare done in {times['prepare']:.0f} s")
    data, raw = data_dir / "bin", data_dir / "raw"
    if "test_debian" in subsets and not nmt_recipe.has_subset(data, "test_debian"):
        raise SystemExit(f"[main_job] {data} has no test_debian split: the held-out domain test set is missing")
    if not expects_debian_test(preset):
        say("NOTE: this preset's corpus has no held-out Debian test set (its data options say so): "
            "Table 1 has the in-domain test set only")
    if args.study in horizon.STUDIES:
        say(f"stage 2/{stages}: {args.study} study")
        try:
            written = horizon_job.run(args, preset, seeds, data, raw, runs, report, times)
        except nmt_recipe.PartOver as stop:
            say(f"part over after {(time.time() - start) / 60:.1f} min ({stop}): run the same command again to "
                "continue")
            raise SystemExit(horizon.PART_OVER)
        say(f"stage 3/{stages}: report in {report}")
    elif args.study:
        written = study_job(args, preset, seeds, data, raw, runs, report, times)
    else:
        written = table1_job(args, preset, seeds, data, raw, runs, report, prepare_cmd, times, subsets)
    # the sweep comparison's report, if one ran beside these runs (claim 5)
    sweep_report = runs_folder("sweep", args.preset, runs.parent) / "report"
    written.append(findings.write(report, commands(args.preset), sweep_report))
    total = time.time() - start
    name = "summary.json" if not args.study else f"summary_{args.study}.json"
    (report / name).write_text(json.dumps(
        {"preset": args.preset, "study": args.study or "table1", "seeds": seeds, "wall_seconds": round(total),
         "stage_seconds": {k: round(v) for k, v in times.items()}, "data": str(data_dir), "test_sets": subsets},
        indent=1))
    say(f"done in {total / 60:.1f} min: {', '.join(p.name for p in written)}, {name} in {report}")


if __name__ == "__main__":
    main()
