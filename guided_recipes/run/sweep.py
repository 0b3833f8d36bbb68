"""Guided or a sweep? The paper's Table 2 at a preset's scale: the baseline recipe's static
values searched by Bayesian optimisation (Optuna's TPE through hydra-optuna-sweeper, every
trial a normal `fairseq-hydra-train` run) against untuned guided runs, with the compute
each row cost.

    python scripts/sweep.py                 # CPU preset: rows below, the offline de-en corpus
    python scripts/sweep.py --preset gpu    # the same on one GPU (4 trials at a time)

Rows (--rows): base-bo (lr on a log scale and beta1, --search-beta2 adds beta2; --trials
trials), beta1 and alpha+beta1 (guided, untuned: one run each), alpha-meta-lr (guided alpha,
its meta lr tuned over --meta-lr-scales, a grid through the same sweeper). The objective of
every trial is its best validation BLEU (fairseq's --eval-bleu, beam 4, sentencepiece
removed; --objective loss for validation loss); each row's selected model (its best trial)
is scored on the test set with fairseq-generate (beam 4) and sacrebleu, and compared with
BO's selected model by sacrebleu's paired bootstrap (one seed each: test-set noise). Writes
OUT/report/table2.{md,json} and bo_vs_guided.{png,csv}; OUT/STUDY/commands.sh has each
sweep's exact command. Resumable: the same command continues an interrupted comparison and
never reruns a finished trial (studies live in --storage, a SQLite file by default).
"""
import argparse
import time
from pathlib import Path

from . import corpus, nmt, sweep_study
from ..common import floats, runs_folder, sayer
from ..report import sweep_report
from .studies import preset_values
from .sweep_study import Study

ROWS = {"base-bo": "base, static values by BO (TPE)", "beta1": "guided beta1, untuned",
        "alpha+beta1": "guided alpha+beta1, untuned", "alpha-meta-lr": "guided alpha, meta lr tuned"}
LAUNCHERS = ("basic", "joblib", "submitit_slurm", "submitit_local")


def pair(text: str) -> tuple:
    values = tuple(float(x) for x in text.split(","))
    if len(values) != 2 or not values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with LOW < HIGH, got {text!r}")
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=[n for n, x in nmt.PRESETS.items() if x.corpus == "offline"], default="cpu",
                   help="configs/nmt/PRESET.yaml: the recipe every trial trains (default cpu)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows to run (default all: {','.join(ROWS)})")
    p.add_argument("--trials", type=int, default=12, help="BO trials of the base recipe (default 12)")
    p.add_argument("--lr-range", type=pair, default=(0.1, 3.0),
                   help="base-bo: lr searched on a log scale between these multiples of the preset's lr (default 0.1,3)")
    p.add_argument("--beta1-range", type=pair, default=(0.5, 0.99), help="base-bo: beta1 interval (default 0.5,0.99)")
    p.add_argument("--search-beta2", action="store_true", help="base-bo: search beta2 too (--beta2-range)")
    p.add_argument("--beta2-range", type=pair, default=(0.95, 0.9999), help="base-bo: beta2 interval (default 0.95,0.9999)")
    p.add_argument("--meta-lr-scales", type=floats, default=(0.1, 0.3, 1.0, 3.0),
                   help="alpha-meta-lr: its grid, multiples of the preset's guided_meta_lr (default 0.1,0.3,1,3)")
    p.add_argument("--startup-trials", type=int, default=4,
                   help="TPE's random start-up trials before it models the objective (default 4; Optuna's own is 10)")
    p.add_argument("--objective", choices=("bleu", "loss"), default="bleu",
                   help="validation metric each trial returns: BLEU (maximised) or loss (minimised)")
    p.add_argument("--seed", type=int, default=1, help="training seed of every run, and TPE's seed (default 1)")
    p.add_argument("--parallel", type=int, default=None, help="trials at a time (default: the preset's runs at a time)")
    p.add_argument("--launcher", choices=LAUNCHERS, default=None,
                   help="hydra launcher of the trials (default: joblib when --parallel > 1, else basic); "
                        "submitit_slurm submits each trial as a Slurm job (see README)")
    p.add_argument("--hydra", action="append", default=[], metavar="OVERRIDE",
                   help="more hydra overrides for every sweep, e.g. hydra.launcher.partition=gpu (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="the comparison's folder (default runs/sweep-PRESET)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///OUT/optuna.db)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the offline corpus, prepared there if needed (default data/libreoffice-de-en[-VOCAB])")
    p.add_argument("--no-prepare", action="store_true", help="use --data-dir as it is (bin/ and raw/)")
    p.add_argument("--data", type=Path, default=None, help="a binarized corpus with a guide split instead "
                   "of the offline one (with --raw; nothing is prepared)")
    p.add_argument("--raw", type=Path, default=None, help="with --data: the folder of the detokenized test.TGT")
    p.add_argument("--no-test", action="store_true", help="skip the test-set scoring of the selected models")
    p.add_argument("--quiet", action="store_true", help="keep fairseq's own output in the sweep logs only")
    return check(p, p.parse_args(argv))


def check(parser, args):
    """Every flag checked before anything trains."""
    args.rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in args.rows if r not in ROWS]
    if bad or not args.rows:
        parser.error(f"--rows: unknown {bad}; choose from {','.join(ROWS)}")
    for name in ("trials", "startup_trials"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr_range[0] <= 0:
        parser.error("--lr-range: multiples must be > 0")
    for name in ("beta1_range", "beta2_range"):
        low, high = getattr(args, name)
        if not (0 <= low and high < 1):
            parser.error(f"--{name.replace('_', '-')}: betas must lie in [0, 1)")
    if not args.meta_lr_scales or min(args.meta_lr_scales) <= 0 or len(set(args.meta_lr_scales)) < len(args.meta_lr_scales):
        parser.error("--meta-lr-scales: distinct multiples > 0")
    preset = nmt.PRESETS[args.preset]
    args.parallel = args.parallel or preset.parallel
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    args.launcher = args.launcher or ("joblib" if args.parallel > 1 else "basic")
    if (args.data is None) != (args.raw is None):
        parser.error("--data and --raw go together")
    if args.data is not None and not (args.data / "dict.{}.txt".format(nmt.language_pair(args.data)[1])).is_file():
        parser.error(f"--data {args.data}: not a binarized corpus")
    if args.data is not None and not nmt.has_subset(args.data, "guide"):
        parser.error(f"--data {args.data}: no guide split (guided runs need one)")
    bad = [o for o in args.hydra if not o.startswith(("hydra.", "hydra/"))]
    if bad:
        parser.error(f"--hydra: only hydra's own settings (hydra.* or hydra/GROUP=...), got {bad}")
    return args


def _num(x: float) -> str:
    return f"{float(x):.6g}"  # 0.0025 x 0.3 as 0.00075, not 0.0007499999999999999


def plan(args, preset) -> list:
    """The studies behind the chosen rows."""
    values = preset_values(preset)
    lr_low, lr_high = (values["lr"] * s for s in args.lr_range)
    search = [f"static.lr=tag(log, interval({_num(lr_low)}, {_num(lr_high)}))",
              f"static.beta1=interval({_num(args.beta1_range[0])}, {_num(args.beta1_range[1])})"]
    if args.search_beta2:
        search.append(f"static.beta2=interval({_num(args.beta2_range[0])}, {_num(args.beta2_range[1])})")
    meta = ", ".join(_num(values["meta_lr"] * s) for s in args.meta_lr_scales)
    studies = {"base-bo": Study("base-bo", "base", tuple(search), args.trials, "tpe"),
               "beta1": Study("beta1", "beta1", (), 1, "tpe"),
               "alpha+beta1": Study("alpha+beta1", "alpha+beta1", (), 1, "tpe"),
               "alpha-meta-lr": Study("alpha-meta-lr", "alpha", (f"optimizer.guided_meta_lr=choice({meta})",),
                                      len(args.meta_lr_scales), "grid")}
    return [studies[r] for r in args.rows]


say = sayer("sweep")


def main(argv=None):
    args = parse_args(argv)
    preset = nmt.PRESETS[args.preset]
    out = (args.out or runs_folder("sweep", args.preset)).resolve()
    storage = args.storage or f"sqlite:///{out / 'optuna.db'}"
    start = time.time()
    if args.data is not None:
        data, raw = args.data.resolve(), args.raw.resolve()
    else:
        data_dir = corpus.data_dir(preset, args.data_dir).resolve()
        if args.no_prepare and not (data_dir / "bin").is_dir():
            raise SystemExit(f"--no-prepare: no prepared corpus in {data_dir}")
        if not args.no_prepare:
            say(f"prepare the offline de-en corpus in {data_dir}")
            corpus.prepare(data_dir, preset)
        data, raw = data_dir / "bin", data_dir / "raw"
    studies = plan(args, preset)
    say(f"{len(studies)} rows, {sum(s.trials for s in studies)} trials in {out} (storage {storage}; "
        f"{args.launcher} launcher, {args.parallel} at a time)")
    out.mkdir(parents=True, exist_ok=True)
    maximize, rows = args.objective == "bleu", []
    for study in studies:
        t0 = time.time()
        trials = sweep_study.run(study, out / study.name, storage, preset, data, args.objective, args.seed,
                                 args.launcher, args.parallel, args.startup_trials, not args.quiet, args.hydra)
        best = sweep_report.selected(trials, maximize)
        bleu = None
        if best is not None and not args.no_test:
            bleu = nmt.evaluate(data, raw, Path(best["run"]), preset, checkpoint="checkpoint_best.pt")
        rows.append(sweep_report.row(study.name, ROWS[study.name], trials, maximize, bleu))
        say(f"{study.name}: {len(trials)} trials, best validation {args.objective} "
            f"{'-' if best is None else format(best['objective'], '.3f')}, test BLEU "
            f"{'-' if bleu is None else format(bleu, '.2f')} ({time.time() - t0:.0f} s)")
    if not args.no_test:
        tgt = nmt.language_pair(data)[1]
        sweep_report.versus_bo(rows, raw / f"test.{tgt}", f"test.hyp.{tgt}")
    written = sweep_report.write(rows, args.objective, out / "report", {
        "preset": args.preset, "seed": args.seed, "storage": storage, "data": str(data),
        "searched": {s.name: list(s.search) for s in studies}, "wall_seconds": round(time.time() - start)})
    print((out / "report" / "table2.md").read_text(), end="")
    say(f"done in {(time.time() - start) / 60:.1f} min: {', '.join(p.name for p in written)} in {out / 'report'}")
