"""The paper's NMT comparison as a recipe: baseline LAMB vs guided alpha / beta1 /
alpha+beta1, same budget and seeds, on a fairseq-binarized corpus with a guide split.

Each part runs on its own, on any such corpus:
    python scripts/nmt_recipe.py train    --data DIR --variant beta1 --seed 1 --preset cpu --out RUNS
    python scripts/nmt_recipe.py evaluate --data DIR --raw DIR/../raw --run RUNS/beta1-seed1
    python user_scripts/plot_schedules.py RUNS      python user_scripts/compare_table.py RUNS
`scripts/main_job.py` chains them on the real offline corpus.
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

VARIANTS = {"base": "", "alpha": "alpha", "beta1": "beta1", "alpha+beta1": "alpha,beta1"}


@dataclass(frozen=True)
class Preset:
    model: str
    max_tokens: int
    guidance_max_tokens: int
    max_update: int
    lr: float
    warmup: int
    meta_lr: float
    validate_every: int
    seeds: tuple
    vocab_size: int
    eval_batch_size: int = 128
    log_interval: int = 10
    extra: str = ""
    data_options: tuple = field(default_factory=tuple)


PRE_NORM = "--encoder-normalize-before --decoder-normalize-before --share-all-embeddings"
PRESETS = {
    # 1.5M parameters, 8k joint vocab: 8 runs and their evaluation fit 45 min on 2 cores
    # (measured: 0.67 s a baseline update, 0.84 s a guided one, with a 1k-token guide batch).
    "cpu": Preset(model=f"--arch transformer --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 "
                        f"--decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 "
                        f"--encoder-attention-heads 4 --decoder-attention-heads 4 {PRE_NORM}",
                  max_tokens=4096, guidance_max_tokens=1024, max_update=340, lr=0.01, warmup=100,
                  meta_lr=3e-3, validate_every=85, seeds=(1, 2), vocab_size=8000),
    # ~121M parameters as in the paper (6+6 layers, 768 wide, 32k joint vocab), LAMB, fp16.
    "gpu": Preset(model=f"--arch transformer --encoder-layers 6 --decoder-layers 6 --encoder-embed-dim 768 "
                        f"--decoder-embed-dim 768 --encoder-ffn-embed-dim 3072 --decoder-ffn-embed-dim 3072 "
                        f"--encoder-attention-heads 12 --decoder-attention-heads 12 {PRE_NORM} --dropout 0.1",
                  max_tokens=16384, guidance_max_tokens=16384, max_update=30000, lr=0.004, warmup=4000,
                  meta_lr=3e-5, validate_every=1000, seeds=(1,), vocab_size=32000, eval_batch_size=256,
                  log_interval=100,
                  extra="--fp16"),
    # seconds a run: for the pipeline's own test
    "tiny": Preset(model=f"--arch transformer --encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 "
                         f"--decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 "
                         f"--encoder-attention-heads 2 --decoder-attention-heads 2 {PRE_NORM}",
                   max_tokens=1024, guidance_max_tokens=512, max_update=12, lr=0.01, warmup=4,
                   meta_lr=1e-2, validate_every=6, seeds=(1,), vocab_size=1000, log_interval=2,
                   data_options=("--valid-size", "100", "--test-size", "100")),
}


def language_pair(data: Path):
    """(src, tgt) from the dict.*.txt files fairseq-preprocess wrote ('en' last by default)."""
    langs = sorted(p.name.split(".")[1] for p in data.glob("dict.*.txt"))
    if len(langs) != 2:
        raise SystemExit(f"--data {data}: expected two dict.LANG.txt files, found {langs}")
    train = sorted(data.glob("train.*-*.*.idx"))
    if train:
        src, tgt = train[0].name.split(".")[1].split("-")
        return src, tgt
    return tuple(langs)


def train_command(data: Path, run_dir: Path, variant: str, seed: int, preset: Preset):
    src, tgt = language_pair(data)
    cmd = [str(BIN / "fairseq-train"), str(data), "--user-dir", str(REPO / "fairseq_guided"),
           "--task", "guided_translation", "--source-lang", src, "--target-lang", tgt,
           *preset.model.split(), "--optimizer", "guided_lamb", "--lamb-betas", "(0.9, 0.999)",
           "--weight-decay", "0.01", "--lr", str(preset.lr), "--lr-scheduler", "inverse_sqrt",
           "--warmup-updates", str(preset.warmup), "--warmup-init-lr", "1e-7",
           "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
           "--max-tokens", str(preset.max_tokens), "--max-update", str(preset.max_update),
           "--seed", str(seed), "--save-dir", str(run_dir / "checkpoints"), "--no-epoch-checkpoints",
           "--validate-interval-updates", str(preset.validate_every), "--log-format", "json",
           "--log-interval", str(preset.log_interval), "--log-file", str(run_dir / "train.log"), "--num-workers", "0",
           *preset.extra.split()]
    if VARIANTS[variant]:
        cmd += ["--guided-hparams", VARIANTS[variant], "--guided-meta-lr", str(preset.meta_lr),
                "--guidance-max-tokens", str(preset.guidance_max_tokens)]
    return cmd


def evaluate_command(data: Path, run_dir: Path, preset: Preset):
    src, tgt = language_pair(data)
    return [str(BIN / "fairseq-generate"), str(data), "--user-dir", str(REPO / "fairseq_guided"),
            "--source-lang", src, "--target-lang", tgt,
            "--path", str(run_dir / "checkpoints" / "checkpoint_last.pt"), "--gen-subset", "test",
            "--beam", "4", "--batch-size", str(preset.eval_batch_size), "--post-process", "sentencepiece",
            # with the default multiple of 8, fairseq-generate drops the last, partial batch:
            # the longest test sentences would go unscored
            "--required-batch-size-multiple", "1",
            "--max-len-a", "1.2", "--max-len-b", "10", *(["--fp16"] if "--fp16" in preset.extra else [])]


def run_logged(cmd, log_path: Path, echo=True):
    """Run a command, streaming its output to the console and to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
        proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n  see {log_path}")


def record_command(run_dir: Path, name: str, cmd):
    with open(run_dir / "commands.sh", "a") as f:
        f.write(f"# {name}\n{shlex.join(cmd)}\n")


def train(data: Path, run_dir: Path, variant: str, seed: int, preset: Preset, echo=True):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "commands.sh").write_text("")
    (run_dir / "train.log").unlink(missing_ok=True)  # fairseq appends to --log-file
    cmd = train_command(data, run_dir, variant, seed, preset)
    record_command(run_dir, f"train {variant} seed {seed}", cmd)
    run_logged(cmd, run_dir / "train.stdout", echo)
    (run_dir / "run.json").write_text(json.dumps({"variant": variant, "seed": seed}))


def evaluate(data: Path, raw: Path, run_dir: Path, preset: Preset, echo=False) -> float:
    import sacrebleu

    src, tgt = language_pair(data)
    cmd = evaluate_command(data, run_dir, preset)
    record_command(run_dir, "evaluate (hypotheses sorted by id, scored by sacrebleu against raw/test)", cmd)
    run_logged(cmd, run_dir / "generate.out", echo)
    hyps = {}
    for line in (run_dir / "generate.out").read_text().splitlines():
        if line.startswith("H-"):
            key, _, text = line.split("\t", 2)
            hyps[int(key[2:])] = text
    refs = (raw / f"test.{tgt}").read_text().splitlines()
    if len(hyps) != len(refs):
        raise SystemExit(f"{run_dir}: {len(hyps)} hypotheses for {len(refs)} references")
    ordered = [hyps[i] for i in range(len(refs))]
    (run_dir / f"test.hyp.{tgt}").write_text("\n".join(ordered) + "\n")
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(ordered, [refs])
    result = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    result.update(bleu=bleu.score, bleu_signature=str(metric.get_signature()))
    (run_dir / "run.json").write_text(json.dumps(result, indent=1))
    return bleu.score


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("train", help="train one variant")
    t.add_argument("--variant", choices=list(VARIANTS), required=True)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--out", type=Path, default=REPO / "runs" / "nmt", help="folder of runs")
    e = sub.add_parser("evaluate", help="beam-4 BLEU of one run's last checkpoint")
    e.add_argument("--run", type=Path, required=True, help="a run folder made by train")
    e.add_argument("--raw", type=Path, required=True, help="folder with the detokenized test.TGT")
    for p in (t, e):
        p.add_argument("--data", type=Path, required=True, help="fairseq-binarized corpus with a guide split")
        p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    start = time.time()
    if args.part == "train":
        train(args.data, args.out / f"{args.variant}-seed{args.seed}", args.variant, args.seed, preset)
    else:
        print(f"BLEU = {evaluate(args.data, args.raw, args.run, preset):.2f}")
    print(f"[nmt_recipe] {args.part} done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
