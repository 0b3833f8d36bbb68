"""T5-style span-corruption pretraining with T5's Adafactor (relative step, no momentum)
against the paper's guided variants, then a downstream check: each pretrained model, and
one trained from scratch, fine-tuned on binary movie-review sentiment (text to
"positive"/"negative") with the same budget and seed.

  python scripts/t5_recipe.py --data data/mono-sotu/bin --out runs/t5 [--preset paper]

--data and --sentiment-data come from scripts/prepare_monolingual.sh (sentiment defaults
to DATA/../sentiment/bin). Writes, under --out: one folder a run (logs, checkpoints),
valid_curves.csv (update, variant, seed, valid loss in bits), valid_curves.png and
results.json (settings and their sources, curves, learned values, accuracies with 95%
Wilson intervals, the majority-class and no-pretraining controls, wall times, commands).

The exact commands: pretrain_command(preset, variant, data, save_dir, seed, **overrides),
finetune_command(preset, data, save_dir, seed, pretrained=None, **overrides) and
generate_command(data, checkpoint) return argv lists; settings(preset, **overrides) the
values they use. The presets are configs/t5/PRESET.yaml, every value with its source;
PRESETS holds them as {preset: {setting: (value, source)}}.
"""
import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from ..common import BIN, PLUGIN, run_logged as _run_logged
from ..datalib.monolingual import vocab_pieces
from ..presets import T5 as PRESETS
from ..report import t5_report
from ..report.logkeys import LEARNED_PREFIX, LOSS, NUM_UPDATES, VALID_PREFIX

# T5's baseline has no momentum (no --beta1). The paper's T5 runs learned alpha, beta1, and
# both together (its section 3.2); a learned beta1 needs a first moment and a start value.
VARIANTS = {
    "baseline": None,
    "alpha": "alpha",
    "beta1": "beta1",
    "alpha_beta1": "alpha,beta1",
}
NO_PRETRAINING = "no_pretraining"  # the fine-tuning control: random init, same budget


def settings(preset, **overrides):
    """The preset's values, with overrides (None leaves a value as it is)."""
    values = {key: value for key, (value, _) in PRESETS[preset].items()}
    unknown = set(overrides) - set(values)
    if unknown:
        raise KeyError(f"unknown settings {sorted(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def _train_common(p, data, save_dir, seed):
    return [BIN / "fairseq-train", data, "--user-dir", PLUGIN, "--arch", p["arch"],
            "--criterion", "cross_entropy", "--optimizer", "guided_adafactor", "--scale-parameter",
            "--save-dir", save_dir, "--seed", seed, "--num-workers", 0, "--log-format", "json",
            *(["--fp16"] if p["fp16"] else [])]


def pretrain_command(preset, variant, data, save_dir, seed=1, **overrides):
    """fairseq-train argv for one pretraining run of VARIANTS[variant]."""
    p = settings(preset, **overrides)
    learned = VARIANTS[variant]
    cmd = _train_common(p, data, save_dir, seed) + [
        "--task", "guided_span_corruption", "--inputs-length", p["inputs_length"],
        # inverse_sqrt with warmup-init-lr = lr: constant lr for the "warm-up", then
        # lr * sqrt(W / step), i.e. T5's 1/sqrt(max(step, 10^4)) when lr = 0.01, W = 10^4
        "--lr", p["lr"], "--lr-scheduler", "inverse_sqrt", "--warmup-updates", p["constant_updates"],
        "--warmup-init-lr", p["lr"], "--max-tokens", p["max_tokens"], "--max-update", p["pretrain_updates"],
        "--validate-interval-updates", p["validate_every"], "--save-interval-updates", p["pretrain_updates"],
        "--keep-interval-updates", 1, "--no-epoch-checkpoints", "--log-interval", 10]
    if p["batch_size"]:
        cmd += ["--batch-size", p["batch_size"]]
    if learned:
        if "beta1" in learned:
            cmd += ["--beta1", p["beta1_init"]]
        cmd += ["--guided-hparams", learned, "--guided-meta-lr", p["meta_lr"]]
    return [str(c) for c in cmd]


def finetune_command(preset, data, save_dir, seed=1, pretrained=None, **overrides):
    """fairseq-train argv fine-tuning PRETRAINED (a checkpoint; None: from scratch, the
    no-pretraining control) on the sentiment task, T5's fine-tuning optimizer: Adafactor,
    relative step, constant lr, no momentum."""
    p = settings(preset, **overrides)
    cmd = _train_common(p, data, save_dir, seed) + [
        "--task", "translation", "-s", "src", "-t", "tgt", "--dropout", "0.1",
        "--lr", p["finetune_lr"], "--max-tokens", p["finetune_max_tokens"],
        "--max-update", p["finetune_updates"], "--no-epoch-checkpoints", "--no-save-optimizer-state",
        "--log-interval", 50,
        # every test snippet must be scored: fairseq drops a last batch smaller than the
        # multiple (default 8)
        "--required-batch-size-multiple", 1]
    if p["fp16"]:
        # the stock translation task does not record the parameter layout that flat fp16
        # masters need for Adafactor's per-tensor update (fairseq_guided/flat_masters.py)
        cmd += ["--fp16-no-flatten-grads"]
    if pretrained:
        cmd += ["--restore-file", pretrained, "--reset-optimizer", "--reset-dataloader",
                "--reset-meters", "--reset-lr-scheduler"]
    return [str(c) for c in cmd]


def generate_command(data, checkpoint):
    """Greedy decoding of the sentiment test split."""
    return [str(c) for c in [
        BIN / "fairseq-generate", data, "--user-dir", PLUGIN, "--task", "translation", "-s", "src",
        "-t", "tgt", "--path", checkpoint, "--gen-subset", "test", "--beam", 1, "--batch-size", 250,
        "--post-process", "sentencepiece", "--required-batch-size-multiple", 1]]


def run_logged(cmd, log_path, threads):
    """Run a fairseq command, its output to log_path; return (output, wall seconds)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.time()
    Path(log_path).write_text(" ".join(cmd) + "\n")
    _run_logged(cmd, log_path, echo=False, append=True, env=env)
    return Path(log_path).read_text(), time.time() - start


def json_rows(output, tag):
    return [json.loads(line[line.index("{"):]) for line in output.splitlines()
            if f"| {tag} |" in line and "{" in line]


def finetune_and_score(p, preset, sentiment, run_dir, seed, pretrained, threads, overrides):
    """Fine-tune, decode the test split, score it; the record's downstream fields."""
    ft = finetune_command(preset, sentiment, run_dir / "finetune", seed, pretrained, **overrides)
    _, ft_wall = run_logged(ft, run_dir / "finetune.log", threads)
    gen = generate_command(sentiment, run_dir / "finetune" / "checkpoint_last.pt")
    gen_out, gen_wall = run_logged(gen, run_dir / "generate.log", threads)
    try:
        score = t5_report.generated_accuracy(gen_out)
    except ValueError as error:
        sys.exit(f"{error}; see {run_dir / 'generate.log'}")
    if score["n"] != t5_report.n_test(sentiment):
        sys.exit(f"scored {score['n']} of {t5_report.n_test(sentiment)} test snippets; see {run_dir / 'generate.log'}")
    low, high = score["ci95"]
    print(f"   fine-tuned {p['finetune_updates']} updates ({ft_wall:.0f}s): test accuracy "
          f"{score['accuracy']:.4f} [{low:.3f}, {high:.3f}] on {score['n']} snippets", flush=True)
    return {"finetune_wall_s": round(ft_wall, 1), "generate_wall_s": round(gen_wall, 1),
            "test": score, "finetune_cmd": " ".join(ft), "generate_cmd": " ".join(gen)}


def pretrain(preset, variant, data, run_dir, seed, threads, overrides):
    cmd = pretrain_command(preset, variant, data, run_dir / "pretrain", seed, **overrides)
    output, wall = run_logged(cmd, run_dir / "pretrain.log", threads)
    curve = [(int(r[VALID_PREFIX + NUM_UPDATES]), float(r[VALID_PREFIX + LOSS])) for r in json_rows(output, "valid")]
    last = json_rows(output, "train_inner")[-1]
    print(f"   wall {wall:.0f}s, valid loss (bits) by update: {curve}", flush=True)
    return {"pretrain_wall_s": round(wall, 1), "valid_curve": curve, "pretrain_cmd": " ".join(cmd),
            "final_learned": {k: float(v) for k, v in last.items() if k.startswith(LEARNED_PREFIX)}}


def check_vocabulary(p, data, preset):
    pieces = vocab_pieces(data)
    if pieces != p["vocab_size"]:
        sys.exit(f"preset {preset} asks for a {p['vocab_size']}-piece vocabulary; {data} has "
                 f"{pieces}: prepare it with scripts/prepare_monolingual.sh --vocab-size "
                 f"{p['vocab_size']} (sentencepiece stops short of it on too little text), "
                 f"or pass --vocab-size {pieces}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="pretraining data (prepare_monolingual.sh DEST/bin)")
    parser.add_argument("--sentiment-data", help="fine-tuning data (default: DATA/../sentiment/bin)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="tiny (CPU) or paper (GPU)")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; each variant runs each")
    parser.add_argument("--variants", default=f"baseline,alpha_beta1,{NO_PRETRAINING}",
                        help=f"comma-separated, of {', '.join(VARIANTS)} (alpha_beta1: the paper's T5 "
                        f"headline) and {NO_PRETRAINING} (the fine-tuning control, random init)")
    for key, (value, _) in PRESETS["tiny"].items():
        kind = {bool: int, type(None): int}.get(type(value), type(value))
        parser.add_argument("--" + key.replace("_", "-"), type=kind,
                            help=f"override the preset's {key} (tiny: {value}, paper: {PRESETS['paper'][key][0]})")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for each run (0: leave)")
    parser.add_argument("--skip-finetune", action="store_true", help="pretraining curves only")
    args = parser.parse_args(argv)
    args.overrides = {key: getattr(args, key) for key in PRESETS["tiny"]}
    if args.overrides["fp16"] is not None:
        args.overrides["fp16"] = bool(args.overrides["fp16"])
    return args


def main(argv=None):
    args = parse_args(argv)
    preset, overrides = args.preset, args.overrides
    p = settings(preset, **overrides)
    data = Path(args.data).resolve()
    sentiment = Path(args.sentiment_data or data.parent / "sentiment" / "bin").resolve()
    for folder, what in ((data, "--data"), (sentiment, "--sentiment-data")):
        if not (folder / "dict.txt").exists() and not (folder / "dict.src.txt").exists():
            sys.exit(f"{what} {folder}: no fairseq dictionary; run scripts/prepare_monolingual.sh")
    check_vocabulary(p, data, preset)
    variants = args.variants.split(",")
    if not set(variants) <= {*VARIANTS, NO_PRETRAINING}:
        sys.exit(f"--variants: of {', '.join(VARIANTS)}, {NO_PRETRAINING}; got {args.variants}")
    if args.skip_finetune and NO_PRETRAINING in variants:
        variants.remove(NO_PRETRAINING)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    results = {"preset": preset, "settings": p,
               "sources": {k: source for k, (_, source) in PRESETS[preset].items() if overrides.get(k) is None},
               "overridden": {k: v for k, v in overrides.items() if v is not None}, "runs": []}
    if not args.skip_finetune:
        results["majority_class"] = t5_report.majority_control(sentiment)
    curve_rows = []
    for seed in seeds:
        for variant in variants:
            run_dir = out / f"{variant}-seed{seed}"
            run_dir.mkdir(exist_ok=True)
            record = {"variant": variant, "seed": seed}
            if variant != NO_PRETRAINING:
                print(f"[{variant} seed {seed}] pretraining {p['pretrain_updates']} updates ...", flush=True)
                record.update(pretrain(preset, variant, data, run_dir, seed, args.threads, overrides))
                curve_rows += [(u, variant, seed, loss) for u, loss in record["valid_curve"]]
                checkpoint = run_dir / "pretrain" / "checkpoint_last.pt"
            else:
                print(f"[{variant} seed {seed}] fine-tuning from random initialisation ...", flush=True)
                checkpoint = None
            if not args.skip_finetune:
                record.update(finetune_and_score(p, preset, sentiment, run_dir, seed, checkpoint,
                                                 args.threads, overrides))
            results["runs"].append(record)
            (out / "results.json").write_text(json.dumps(results, indent=1))

    paired_with_control(results["runs"])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    with open(out / "valid_curves.csv", "w", newline="") as f:
        csv.writer(f).writerows([("update", "variant", "seed", "valid_loss_bits"), *curve_rows])
    plot(results["runs"], out / "valid_curves.png")
    print(summary(results))
    print(f"wrote {out / 'results.json'}, {out / 'valid_curves.csv'}, {out / 'valid_curves.png'}")


def paired_with_control(runs):
    """Each pretrained run against the no-pretraining run of its seed, snippet by snippet
    (exact McNemar): record["vs_no_pretraining"]."""
    control = {r["seed"]: r["test"]["hits"] for r in runs if r["variant"] == NO_PRETRAINING and "test" in r}
    for r in runs:
        if r["variant"] != NO_PRETRAINING and "test" in r and r["seed"] in control:
            only_this, only_control, p = t5_report.mcnemar_exact(r["test"]["hits"], control[r["seed"]])
            r["vs_no_pretraining"] = {"only_this_right": only_this, "only_control_right": only_control,
                                      "mcnemar_p": p}


def summary(results):
    """A plain-text table: final valid loss, test accuracy with its 95% interval, and the
    paired comparison with the no-pretraining control of the same seed."""
    rows = [f"{'variant':<16}{'seed':>5}{'valid bits':>12}{'test acc':>10}  {'95% Wilson':<16}"
            "vs no pretraining (McNemar)"]
    majority = results.get("majority_class")
    if majority:
        rows.append(f"{'majority class':<16}{'':>5}{'':>12}{majority['accuracy']:>10.4f}  "
                    f"[{majority['ci95'][0]:.3f}, {majority['ci95'][1]:.3f}]")
    for r in results["runs"]:
        loss = f"{r['valid_curve'][-1][1]:.3f}" if r.get("valid_curve") else "-"
        test = r.get("test")
        acc = f"{test['accuracy']:>10.4f}  [{test['ci95'][0]:.3f}, {test['ci95'][1]:.3f}]" if test else ""
        paired = r.get("vs_no_pretraining")
        versus = (f"  +{paired['only_this_right']}/-{paired['only_control_right']}, "
                  f"p={paired['mcnemar_p']:.3g}") if paired else ""
        rows.append(f"{r['variant']:<16}{r['seed']:>5}{loss:>12}{acc}{versus}")
    return "\n".join(rows)


def plot(runs, path):
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import turns on DEBUG
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        if r.get("valid_curve"):
            ax.plot(*zip(*r["valid_curve"]), marker="o", label=f"{r['variant']} (seed {r['seed']})")
    ax.set_xlabel("update")
    ax.set_ylabel("validation loss (bits/token)")
    ax.set_title("span-corruption pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
