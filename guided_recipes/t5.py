"""T5-style span-corruption pretraining, baseline Adafactor vs guided Adafactor (learned
alpha and beta1, as the paper's T5 runs), then a downstream fine-tuning check of each on
binary movie-review sentiment (text to "positive"/"negative"), same budget and seeds.

  python scripts/t5_recipe.py --data data/mono-sotu/bin --out runs/t5 [--preset paper]

--data and --sentiment-data come from scripts/prepare_monolingual.sh (sentiment defaults
to DATA/../sentiment/bin). Writes, under --out: one folder a run (train.log, checkpoints),
valid_curves.csv (update, variant, seed, valid loss in bits), valid_curves.png and
results.json (curves, final learned values, accuracies, wall times, the commands).

Presets: tiny (default): t5_tiny on CPU, a few minutes a run; paper: t5_small with --fp16
at T5's budget (batch 128 x 512 input tokens, Adafactor lr 0.01 constant for 10k updates
then 1/sqrt, 2^19 updates, meta lr 3e-5) for a GPU. --pretrain-updates etc. override.
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLUGIN = REPO / "fairseq_guided"

PRESETS = {
    "tiny": dict(arch="t5_tiny", inputs_length=128, max_tokens=4096, lr=0.005, warmup=100,
                 warmup_init_lr=None, pretrain_updates=500, validate_every=50, meta_lr=3e-3,
                 finetune_updates=300, finetune_lr=1e-3, finetune_max_tokens=4096, extra=[]),
    "paper": dict(arch="t5_small", inputs_length=512, max_tokens=65536, lr=0.01, warmup=10000,
                  warmup_init_lr=0.01, pretrain_updates=2 ** 19, validate_every=5000, meta_lr=3e-5,
                  finetune_updates=5000, finetune_lr=1e-3, finetune_max_tokens=16384,
                  extra=["--fp16"]),
}


def run_logged(cmd, log_path, threads):
    """Run a fairseq command, its output to log_path; return (output, wall seconds)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.time()
    with open(log_path, "w") as log:
        log.write(" ".join(map(str, cmd)) + "\n")
        log.flush()
        result = subprocess.run([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, env=env)
    output = Path(log_path).read_text()
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}); see {log_path}:\n{output[-3000:]}")
    return output, time.time() - start


def json_rows(output, tag):
    return [json.loads(line[line.index("{"):]) for line in output.splitlines()
            if f"| {tag} |" in line and "{" in line]


def pretrain_cmd(p, data, save_dir, seed, guided):
    cmd = [BIN / "fairseq-train", data, "--user-dir", PLUGIN, "--task", "guided_span_corruption",
           "--inputs-length", p["inputs_length"], "--arch", p["arch"], "--criterion", "cross_entropy",
           "--optimizer", "guided_adafactor", "--beta1", "0.9", "--lr", p["lr"],
           "--lr-scheduler", "inverse_sqrt", "--warmup-updates", p["warmup"],
           "--max-tokens", p["max_tokens"], "--max-update", p["pretrain_updates"],
           "--validate-interval-updates", p["validate_every"], "--save-interval-updates", p["pretrain_updates"],
           "--keep-interval-updates", 1, "--no-epoch-checkpoints", "--save-dir", save_dir,
           "--seed", seed, "--num-workers", 0, "--log-format", "json", "--log-interval", 10, *p["extra"]]
    if p["warmup_init_lr"] is not None:
        cmd += ["--warmup-init-lr", p["warmup_init_lr"]]
    if guided:  # the paper's T5 setting: alpha (lr scale) and beta1 learned together
        cmd += ["--guided-hparams", "alpha,beta1", "--guided-meta-lr", p["meta_lr"]]
    return cmd


def finetune_cmd(p, data, pretrained, save_dir, seed):
    return [BIN / "fairseq-train", data, "--user-dir", PLUGIN, "--task", "translation", "-s", "src",
            "-t", "tgt", "--arch", p["arch"], "--dropout", "0.1", "--criterion", "cross_entropy",
            "--optimizer", "guided_adafactor", "--beta1", "0.9", "--lr", p["finetune_lr"],
            "--max-tokens", p["finetune_max_tokens"], "--max-update", p["finetune_updates"],
            "--restore-file", pretrained, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
            "--reset-lr-scheduler", "--no-epoch-checkpoints", "--no-save-optimizer-state",
            "--save-dir", save_dir, "--seed", seed, "--num-workers", 0, "--log-format", "json",
            "--log-interval", 50, "--required-batch-size-multiple", 1, *p["extra"]]


def accuracy(output):
    """Share of test snippets whose greedy output equals the gold word."""
    hyps, refs = {}, {}
    for line in output.splitlines():
        m = re.match(r"^([HT])-(\d+)\t(.*)$", line)
        if m:
            kind, idx, rest = m.groups()
            (hyps if kind == "H" else refs)[int(idx)] = rest.split("\t")[-1].strip()
    if not refs or set(hyps) != set(refs):
        sys.exit(f"fairseq-generate printed {len(hyps)} hypotheses for {len(refs)} references")
    return sum(hyps[i] == refs[i] for i in refs) / len(refs), len(refs)


def test_size(sentiment_bin):
    """Snippets in the binarized test split. Every one must be scored: fairseq's batching
    silently drops a last batch smaller than --required-batch-size-multiple (default 8),
    hence the multiple of 1 on the fine-tuning and generation commands."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    return len(MMapIndexedDataset(str(sentiment_bin / "test.src-tgt.tgt")))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="pretraining data (prepare_monolingual.sh DEST/bin)")
    parser.add_argument("--sentiment-data", help="fine-tuning data (default: DATA/../sentiment/bin)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="tiny (CPU) or paper (GPU)")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; each variant runs each")
    parser.add_argument("--variants", default="baseline,guided", help="baseline and/or guided")
    for key in ("pretrain_updates", "finetune_updates", "validate_every", "max_tokens"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, help=f"override the preset's {key}")
    parser.add_argument("--meta-lr", type=float, help="override the preset's meta lr")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for each run (0: leave)")
    parser.add_argument("--skip-finetune", action="store_true", help="pretraining curves only")
    args = parser.parse_args()

    p = dict(PRESETS[args.preset])
    for key in ("pretrain_updates", "finetune_updates", "validate_every", "max_tokens", "meta_lr"):
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    data = Path(args.data).resolve()
    sentiment = Path(args.sentiment_data or data.parent / "sentiment" / "bin").resolve()
    for folder, what in ((data, "--data"), (sentiment, "--sentiment-data")):
        if not (folder / "dict.txt").exists() and not (folder / "dict.src.txt").exists():
            sys.exit(f"{what} {folder}: no fairseq dictionary; run scripts/prepare_monolingual.sh")
    variants = args.variants.split(",")
    if not set(variants) <= {"baseline", "guided"}:
        sys.exit(f"--variants: baseline and/or guided, got {args.variants}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    results, curve_rows = {"preset": args.preset, "settings": p, "runs": []}, []
    for seed in seeds:
        for variant in variants:
            run_dir = out / f"{variant}-seed{seed}"
            run_dir.mkdir(exist_ok=True)
            cmd = pretrain_cmd(p, data, run_dir / "pretrain", seed, variant == "guided")
            print(f"[{variant} seed {seed}] pretraining {p['pretrain_updates']} updates ...", flush=True)
            output, wall = run_logged(cmd, run_dir / "pretrain.log", args.threads)
            curve = [(int(r["valid_num_updates"]), float(r["valid_loss"])) for r in json_rows(output, "valid")]
            last = json_rows(output, "train_inner")[-1]
            record = {"variant": variant, "seed": seed, "pretrain_wall_s": round(wall, 1),
                      "valid_curve": curve, "pretrain_cmd": " ".join(map(str, cmd)),
                      "final_learned": {k: float(v) for k, v in last.items() if k.startswith("guided_")}}
            curve_rows += [(u, variant, seed, loss) for u, loss in curve]
            print(f"   wall {wall:.0f}s, valid loss (bits) by update: {curve}", flush=True)
            if not args.skip_finetune:
                ft = finetune_cmd(p, sentiment, run_dir / "pretrain" / "checkpoint_last.pt",
                                  run_dir / "finetune", seed)
                _, ft_wall = run_logged(ft, run_dir / "finetune.log", args.threads)
                gen = [BIN / "fairseq-generate", sentiment, "--user-dir", PLUGIN, "--task", "translation",
                       "-s", "src", "-t", "tgt", "--path", run_dir / "finetune" / "checkpoint_last.pt",
                       "--gen-subset", "test", "--beam", 1, "--batch-size", 250,
                       "--post-process", "sentencepiece", "--required-batch-size-multiple", 1]
                gen_out, gen_wall = run_logged(gen, run_dir / "generate.log", args.threads)
                acc, n = accuracy(gen_out)
                if n != test_size(sentiment):
                    sys.exit(f"scored {n} of {test_size(sentiment)} test snippets; see {run_dir / 'generate.log'}")
                record.update(finetune_wall_s=round(ft_wall, 1), generate_wall_s=round(gen_wall, 1),
                              test_accuracy=acc, test_size=n, finetune_cmd=" ".join(map(str, ft)),
                              generate_cmd=" ".join(map(str, gen)))
                print(f"   fine-tuned {p['finetune_updates']} updates ({ft_wall:.0f}s): "
                      f"test accuracy {acc:.4f} on {n} snippets", flush=True)
            results["runs"].append(record)
            (out / "results.json").write_text(json.dumps(results, indent=1))

    with open(out / "valid_curves.csv", "w", newline="") as f:
        csv.writer(f).writerows([("update", "variant", "seed", "valid_loss_bits"), *curve_rows])
    plot(results["runs"], out / "valid_curves.png")
    print(f"wrote {out / 'results.json'}, {out / 'valid_curves.csv'}, {out / 'valid_curves.png'}")


def plot(runs, path):
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import turns on DEBUG
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        if r["valid_curve"]:
            ax.plot(*zip(*r["valid_curve"]), marker="o", label=f"{r['variant']} (seed {r['seed']})")
    ax.set_xlabel("update")
    ax.set_ylabel("validation loss (bits/token)")
    ax.set_title("span-corruption pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
