"""Running and reporting issue 24's studies (guided_recipes.horizon says what each is):
train the plan, score it, and write the study's files into the main job's report folder.

  guidance     guidance.{md,json}, commands_guidance.sh
  calibration  calibration.{md,json,png}, commands_calibration.sh
  horizon      horizon.{md,json}, horizon_bleu.png (valid BLEU against updates and against
               seconds of training, mean over seeds with its band), horizon_curves.csv,
               commands_horizon.sh
"""
import csv
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import horizon, nmt  # noqa: E402
from ..common import runs_folder, sayer  # noqa: E402
from ..report import stats, tables  # noqa: E402

say = sayer("main_job")


def plan_of(args, preset, seeds, runs: Path, report: Path):
    options = options_of(args)
    study_runs = runs_folder(f"study_{args.study}", args.preset, runs.parent)
    if args.study == "calibration":
        seeds = seeds[:1]
    plan = [(s, seed, horizon.run_folder(study_runs, s, seed, runs, report))
            for s in horizon.settings(args.study, preset, options, report) for seed in seeds]
    return plan, study_runs, options


def options_of(args) -> dict:
    return {**{k: getattr(args, k) for k in horizon.DEFAULTS}, "guided_groups": args.guided_groups,
            "with_global": args.with_global}


def run(args, preset, seeds, data: Path, raw: Path, runs: Path, report: Path, times: dict) -> list:
    """Train and score the study's plan, then write its report; raises nmt.PartOver when
    --part-minutes runs out (the same command continues)."""
    plan, study_runs, options = plan_of(args, preset, seeds, runs, report)
    deadline = time.time() + args.part_minutes * 60 if args.part_minutes else None
    if args.study == "calibration" and horizon.reopen_calibration(plan[0][2], options):
        say(f"calibration: no plateau by its cap; it goes on to --calibration-cap {options['calibration_cap']}")
    todo = [p for p in plan if not nmt.run_info(p[2]).get("trained")]
    say(f"study {args.study}: {len(plan)} runs ({len(todo)} to train) in {study_runs}"
        + (f"; this part stops after the first checkpoint past {args.part_minutes:g} min" if deadline else ""))
    for i, (setting, seed, folder) in enumerate(plan):
        t0 = time.time()
        watch = horizon.plateau_watch(folder, options) if setting.figure == "calibration" else None
        ran = nmt.train(data, folder, setting.variant, seed, preset, echo=not args.quiet, overrides=setting.overrides,
                        info={"setting": setting.name, **setting.values}, watch=watch, deadline=deadline)
        times[f"train {setting.name}, seed {seed}"] = time.time() - t0
        trained = nmt.run_info(folder).get("trained")
        say(f"run {i + 1}/{len(plan)}: {setting.name}, seed {seed}: "
            + (f"trained in {time.time() - t0:.0f} s" if ran else "had finished before: skipped" if trained
               else "another process is training it: left to that one"))
        if setting.figure == "calibration" or not trained:
            continue
        for subset in horizon.subsets_of(setting):
            t0 = time.time()
            bleu = nmt.evaluate(data, raw, folder, preset, subset=subset)
            times[f"evaluate {setting.name}, seed {seed} on {subset}"] = time.time() - t0
            say(f"run {i + 1}/{len(plan)}: {setting.name}, seed {seed} on {subset}: BLEU {bleu:.2f}")
    busy = [f"{s.name}, seed {seed}" for s, seed, f in plan if not nmt.run_info(f).get("trained")]
    if busy:
        say("not in this report yet (another process trains them; the last to finish writes the whole report): "
            + "; ".join(busy))
    report.mkdir(parents=True, exist_ok=True)
    tgt = nmt.language_pair(data)[1]
    (report / f"commands_{args.study}.sh").write_text("\n".join(
        (f / "commands.sh").read_text() for _, _, f in plan if (f / "commands.sh").is_file()))
    written = {"guidance": guidance_files, "calibration": calibration_files, "horizon": horizon_files}[args.study](
        plan, raw, tgt, report, options, preset)
    return written + [report / f"commands_{args.study}.sh"]


def guidance_files(plan, raw, tgt, report, options, preset) -> list:
    data = horizon.guidance_report(plan, raw, tgt)
    data["runs"] = [{"setting": s.name, "seed": seed, "run": str(f), "commit": nmt.run_info(f).get("commit")}
                    for s, seed, f in plan]
    (report / "guidance.json").write_text(json.dumps(data, indent=1))
    (report / "guidance.md").write_text(horizon.guidance_markdown(data))
    print(horizon.guidance_markdown(data), end="")
    return [report / "guidance.md", report / "guidance.json"]


def calibration_files(plan, raw, tgt, report, options, preset) -> list:
    _, _, run = plan[0]
    data = horizon.calibration_report(run, options, preset)
    (report / "calibration.json").write_text(json.dumps(data, indent=1))
    lines = [f"Calibration of the horizon: {data['rule']}; run {run} (commit {data['commit']}).", "",
             "| update | valid BLEU | best so far |", "|---|---|---|"]
    lines += [f"| {p['update']} | {p['bleu']:.2f} | {p['best']:.2f} |" for p in data["curve"]]
    if data["horizon"]:
        lines += ["", f"Plateau at update **{data['horizon']}**: the horizon. Meta lr by the rule (meta lr x updates "
                      f"= {horizon.RULE:g}): {data['meta_lr']:.3g} (the preset's {data['preset_meta_lr']:g} at "
                      f"{preset.max_update} updates)."]
    elif data["failed"]:
        lines += ["", "**Failed calibration**: no plateau before the cap; the horizon study cannot run on it. "
                      "The same command with a higher --calibration-cap continues the run from its last checkpoint."]
    (report / "calibration.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    if data["curve"]:
        ax.plot([p["update"] for p in data["curve"]], [p["bleu"] for p in data["curve"]], marker=".", label="valid BLEU")
        ax.plot([p["update"] for p in data["curve"]], [p["best"] for p in data["curve"]], ls="--", label="best so far")
    if data["horizon"]:
        ax.axvline(data["horizon"], color="k", lw=0.8, label=f"plateau: {data['horizon']}")
    ax.set_xlabel("update")
    ax.set_ylabel("valid BLEU (beam 4)")
    ax.set_title("baseline calibration, seed " + str(plan[0][1]))
    ax.legend()
    fig.tight_layout()
    fig.savefig(report / "calibration.png", dpi=100)
    plt.close(fig)
    print("\n".join(lines))
    return [report / "calibration.md", report / "calibration.json", report / "calibration.png"]


def mean_band(points_by_seed, key):
    """[(x, mean BLEU, lo, hi)] over seeds at the updates every seed has: x is the update or
    the mean seconds; the band is the mean +- one sd over seeds."""
    common = set.intersection(*[{p["update"] for p in pts} for pts in points_by_seed]) if points_by_seed else set()
    out = []
    for update in sorted(common):
        at = [next(p for p in pts if p["update"] == update) for pts in points_by_seed]
        if key == "wall" and any(p["wall"] is None for p in at):
            continue
        c = stats.mean_ci([p["bleu"] for p in at])
        sd = c["sd"] or 0.0
        x = update if key == "update" else sum(p["wall"] for p in at) / len(at)
        out.append((x, c["mean"], c["mean"] - sd, c["mean"] + sd))
    return out


def horizon_files(plan, raw, tgt, report, options, preset) -> list:
    table = horizon.horizon_table(plan, raw, tgt)
    runs = horizon.curves(plan)
    settings = {s.name: s for s, _, _ in plan}
    data = {"updates": plan[0][0].values["updates"], "meta_lr": plan[0][0].values["meta_lr"],
            "guidance": plan[0][0].values["guidance"],
            "settings": {n: {"arm": s.values["arm"], "overrides": list(s.overrides)} for n, s in settings.items()},
            "table": table, "curves": runs, "side_by_side": horizon.side_by_side(report, table, options),
            "train_seconds": {s.values["arm"]: stats.mean_ci([horizon.seconds(f) for t, _, f in plan
                                                            if t.name == s.name and horizon.seconds(f)] or [0])
                              for s in settings.values()},
            "runs": [{"arm": s.values["arm"], "seed": seed, "run": str(f), "commit": nmt.run_info(f).get("commit")}
                     for s, seed, f in plan]}
    (report / "horizon.json").write_text(json.dumps(data, indent=1))
    with open(report / "horizon_curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "seed", "update", "wall_seconds", "valid_bleu"])
        for r in runs:
            writer.writerows([r["arm"], r["seed"], p["update"], p["wall"], p["bleu"]] for p in r["points"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r["points"] for r in runs if r["arm"] == arm and r["points"]]
        for ax, key in zip(axes, ("update", "wall")):
            band = mean_band(mine, key)
            if band:
                xs, mean, lo, hi = zip(*band)
                line, = ax.plot(xs, mean, label=f"{arm} ({len(mine)} seeds)")
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
    axes[0].set_xlabel("update")
    axes[1].set_xlabel("seconds of training (fairseq's wall, validation included)")
    axes[0].set_ylabel("valid BLEU (beam 4), mean +- sd over seeds")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(report / "horizon_bleu.png", dpi=100)
    plt.close(fig)
    lines = [f"Table 1 at the horizon: {data['updates']} updates, guidance {data['guidance']}, meta lr "
             f"{data['meta_lr']:.3g}.", "", tables.markdown(table),
             f"### At the main job's {preset.max_update:,} updates and at the horizon (test)", "",
             f"| arm | {preset.max_update:,}: mean | {preset.max_update:,}: minus base, 95% CI | horizon: mean | "
             "horizon: minus base, 95% CI | "
             "train seconds (mean) |", "|---|---|---|---|---|---|"]
    for r in data["side_by_side"]:
        short, long = r.get("short_vs_base"), r.get("horizon_vs_base")
        lines.append(f"| {r['arm']} | {tables._num(r['short']['mean']) if 'short' in r else '-'} | "
                     + (f"{short['delta']['mean']:+.2f} {tables._interval(short['delta']['ci'])}" if short else "-")
                     + f" | {r['horizon']['mean']:.2f} | "
                     + (f"{long['delta']['mean']:+.2f} {tables._interval(long['delta']['ci'])}" if long else "-")
                     + f" | {data['train_seconds'][r['arm']]['mean']:.0f} |")
    (report / "horizon.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return [report / "horizon.md", report / "horizon.json", report / "horizon_bleu.png", report / "horizon_curves.csv"]
