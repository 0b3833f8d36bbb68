"""Cost of the guided step against plain fairseq, measured in one run on one machine.

    python user_scripts/benchmark.py --device cpu               # small model, any machine
    python user_scripts/benchmark.py --device cuda --data DIR   # paper-sized NMT model, --fp16

Trains each configuration with fairseq-train for --updates updates and reads fairseq's
own logs: median update time and words/s after --warmup-updates, peak GPU memory, and
(in runs with --guidance-time-pass) the time of one plain forward+backward of the
guidance batch. Prints each configuration's ratio to plain fairseq adam and its overhead
beyond the guidance pass = (guided - plain - pass/interval) / plain, and writes the table
as markdown (--out).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS = {
    # 2+2 layers, 128 wide: what a 2-core CPU trains at a few updates per second
    "cpu": dict(model=("--arch transformer --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 "
                       "--decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 "
                       "--encoder-attention-heads 4 --decoder-attention-heads 4 --encoder-normalize-before "
                       "--decoder-normalize-before --share-all-embeddings"),
                max_tokens=2048, extra=""),
    # ~121M parameters with a 32k joint vocabulary (the paper's NMT size): 6+6 layers, 768 wide
    "cuda": dict(model=("--arch transformer --encoder-layers 6 --decoder-layers 6 --encoder-embed-dim 768 "
                        "--decoder-embed-dim 768 --encoder-ffn-embed-dim 3072 --decoder-ffn-embed-dim 3072 "
                        "--encoder-attention-heads 12 --decoder-attention-heads 12 --encoder-normalize-before "
                        "--decoder-normalize-before --share-all-embeddings"),
                 max_tokens=12288, extra="--fp16"),
}


def configurations(device):
    """(name, optimizer flags, learned, guide fraction, interval, time the pass)"""
    rows = [("plain adam", "adam", None, 1, 1, False)]
    optimizers = ["guided_adam", "guided_lamb"]
    learned_sets = ["", "alpha", "beta1", "alpha,beta1"] if device == "cuda" else ["", "alpha,beta1"]
    for opt in optimizers:
        for learned in learned_sets:
            rows.append((f"{opt} {learned or 'nothing'}", opt, learned, 1, 1, False))
    rows.append(("guided_adam alpha,beta1 guide/4", "guided_adam", "alpha,beta1", 4, 1, False))
    rows.append(("guided_adam alpha,beta1 guide/4 every 10", "guided_adam", "alpha,beta1", 4, 10, False))
    if device == "cuda":
        rows.append(("guided_adam alpha,beta1 every 10", "guided_adam", "alpha,beta1", 1, 10, False))
        rows.append(("guided_lamb alpha,beta1 guide/4 every 10", "guided_lamb", "alpha,beta1", 4, 10, False))
    rows.append(("(timing) guidance pass, full", "guided_adam", "alpha", 1, 1, True))
    rows.append(("(timing) guidance pass, guide/4", "guided_adam", "alpha", 4, 1, True))
    return rows


def run_one(args, preset, name, optimizer, learned, guide_fraction, interval, time_pass, workdir):
    max_tokens = preset["max_tokens"]
    cmd = [sys.executable, str(REPO / "user_scripts" / "_bench_launch.py"), args.data,
           "--user-dir", str(REPO / "fairseq_guided"), *preset["model"].split(), *preset["extra"].split(),
           "--optimizer", optimizer, "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
           "--warmup-updates", "100", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
           "--max-tokens", str(max_tokens), "--max-update", str(args.updates), "--no-save",
           "--disable-validation", "--log-format", "json", "--log-interval", str(args.log_interval),
           "--seed", "1", "--num-workers", "0"]
    if args.device == "cpu":
        cmd.append("--cpu")
    if optimizer == "adam":
        cmd += ["--task", "translation"]
    else:
        cmd += ["--task", "guided_translation", "--guidance-max-tokens", str(max_tokens // guide_fraction),
                "--guidance-interval", str(interval)]
        if learned:
            cmd += ["--guided-hparams", learned, "--guided-meta-lr", "1e-4"]
        if time_pass:
            cmd += ["--guidance-time-pass"]
    result_file = Path(workdir) / f"{abs(hash(name))}.json"
    env = dict(os.environ, BENCH_RESULT=str(result_file), PYTHONWARNINGS="ignore")
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stdout[-3000:]}")
    rows = [json.loads(line[line.index("{"):]) for line in out.stdout.splitlines()
            if "| train_inner |" in line and "{" in line]
    rows = [r for r in rows if int(r["num_updates"]) > args.warmup_updates]
    if not rows:
        raise RuntimeError(f"{name}: no log interval after warm-up; raise --updates")
    peak = json.loads(result_file.read_text())["peak_bytes"]
    return {
        "update_s": statistics.median(1.0 / float(r["ups"]) for r in rows),
        "wps": statistics.median(float(r["wps"]) for r in rows),
        "pass_ms": statistics.median(float(r["guide_pass_ms"]) for r in rows) if time_pass else None,
        "peak_gb": peak / 2**30 if peak else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data", default=str(REPO / "data" / "libreoffice-de-en" / "bin"),
                        help="fairseq-binarized corpus with a guide split")
    parser.add_argument("--updates", type=int, default=None, help="updates per configuration")
    parser.add_argument("--warmup-updates", type=int, default=None, help="updates not measured")
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()
    args.updates = args.updates or (300 if args.device == "cuda" else 60)
    args.warmup_updates = args.warmup_updates if args.warmup_updates is not None else args.updates // 3
    if not Path(args.data).is_dir():
        sys.exit(f"--data {args.data}: not found (bash scripts/prepare_offline_corpus.sh makes the default)")
    preset = PRESETS[args.device]

    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, *config in configurations(args.device):
            print(f"[benchmark] {name} ...", flush=True)
            results[name] = run_one(args, preset, name, *config, workdir)
            print(f"[benchmark] {name}: {results[name]}", flush=True)
    print(render(args, results))
    if args.out:
        Path(args.out).write_text(render(args, results))


def render(args, results):
    import fairseq
    import torch

    plain = results["plain adam"]
    pass_time = {1: results["(timing) guidance pass, full"]["pass_ms"] / 1000,
                 4: results["(timing) guidance pass, guide/4"]["pass_ms"] / 1000}
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    lines = [f"- device: {card}; date: {datetime.date.today()}; torch {torch.__version__}, "
             f"fairseq {fairseq.__version__}; {args.updates} updates a run, median after update "
             f"{args.warmup_updates}",
             f"- command: `python user_scripts/benchmark.py --device {args.device} --data {args.data} "
             f"--updates {args.updates}`",
             f"- guidance pass alone (plain forward+backward of the guidance batch): "
             f"{1000 * pass_time[1]:.1f} ms full, {1000 * pass_time[4]:.1f} ms at a quarter", "",
             "| configuration | update ms | words/s | time / plain | overhead beyond guidance pass | peak GB | memory / plain |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name.startswith("(timing)"):
            continue
        fraction = 4 if "guide/4" in name else 1
        interval = 10 if "every 10" in name else 1
        learns = not (name == "plain adam" or name.endswith("nothing"))
        beyond = ((r["update_s"] - plain["update_s"] - (pass_time[fraction] / interval if learns else 0))
                  / plain["update_s"])
        mem = f"{r['peak_gb']:.2f}" if r["peak_gb"] else "n/a"
        mem_ratio = f"{r['peak_gb'] / plain['peak_gb']:.3f}" if r["peak_gb"] and plain["peak_gb"] else "n/a"
        lines.append(f"| {name} | {1000 * r['update_s']:.1f} | {r['wps']:.0f} | "
                     f"{r['update_s'] / plain['update_s']:.3f} | {100 * beyond:+.1f}% | {mem} | {mem_ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
