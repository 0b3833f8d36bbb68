"""The paper's NMT comparison as a recipe: baseline LAMB vs guided alpha / beta1 /
alpha+beta1, same budget and seeds, on a fairseq-binarized corpus with a guide split.

Each preset is a fairseq-hydra-train config, configs/nmt/PRESET.yaml, the one place its
training values live; configs/nmt/recipes.yaml adds what only the recipe needs (corpus,
seeds, evaluation); guided_recipes.presets reads both. A run is `fairseq-hydra-train --config-name PRESET` plus the data,
seed, run folder and variant. Each part runs on its own, on any such corpus:
    python scripts/nmt_recipe.py train    --data DIR --variant beta1 --seed 1 --preset cpu --out RUNS
    python scripts/nmt_recipe.py evaluate --data DIR --raw DIR/../raw --run RUNS/beta1-seed1
    python user_scripts/plot_schedules.py RUNS      python user_scripts/compare_table.py RUNS
`scripts/main_job.py` chains them on the real offline corpus.
"""
import argparse
import fcntl
import json
import shlex
import subprocess
import time
from pathlib import Path

from .. import common
from ..common import BIN, PLUGIN, REPO, run_logged  # noqa: F401 (REPO, run_logged: used by the jobs)
from ..presets import NMT as PRESETS, TUNING_FREE, Preset  # noqa: F401

CONFIGS = common.CONFIGS / "nmt"  # fairseq-hydra-train's --config-dir
VARIANTS = {"base": "", "alpha": "alpha", "beta1": "beta1", "alpha+beta1": "alpha,beta1"}


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


def train_command(data: Path, run_dir: Path, variant: str, seed: int, preset: Preset, overrides=()):
    """fairseq-hydra-train of the preset's config; `overrides` are more hydra overrides."""
    data, run_dir = Path(data).resolve(), Path(run_dir).resolve()  # hydra runs inside run_dir
    src, tgt = language_pair(data)
    cmd = [str(BIN / "fairseq-hydra-train"), "--config-dir", str(CONFIGS), "--config-name", preset.name,
           f"task.data={data}", f"common.user_dir={PLUGIN}", f"task.source_lang={src}",
           f"task.target_lang={tgt}", f"common.seed={seed}", f"checkpoint.save_dir={run_dir / 'checkpoints'}",
           f"common.log_file={run_dir / 'train.log'}", f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
    if variant in TUNING_FREE:
        cmd += tuning_free_overrides(preset, variant, set_lr=not any(o.startswith("optimization.lr=")
                                                                     for o in overrides))
    elif VARIANTS[variant]:
        # quoted: a bare comma is a hydra sweep
        cmd.append("optimizer.guided_hparams=" + VARIANTS[variant].replace(",", "\\,"))
    return cmd + list(overrides)


def tuning_free_overrides(preset: Preset, arm: str, set_lr=True) -> list:
    """Hydra overrides that turn the preset's run into the tuning-free arm `arm`: the stock
    translation task, and the arm's optimizer and lr schedule in place of the preset's
    (keys the arm does not list are removed, weight_decay kept)."""
    spec, config = TUNING_FREE[arm], preset.config
    warmup = config["lr_scheduler"].get("warmup_updates", 0)
    out = ["task._name=translation"] + [f"~task.{k}" for k in config["task"] if k.startswith("guidance")]
    for section in ("optimizer", "lr_scheduler"):
        keep = set(spec[section]) | ({"weight_decay"} if section == "optimizer" else set())
        out += [f"~{section}.{k}" for k in config[section] if k not in keep]
        for key, value in spec[section].items():
            value = warmup if value == "preset_warmup" else value
            value = str(value).lower() if isinstance(value, bool) else value
            out.append(f"{'' if key in config[section] else '+'}{section}.{key}={value}")
    return out + ([f"optimization.lr=[{float(spec['lr'])!r}]"] if set_lr else [])


def evaluate_command(data: Path, run_dir: Path, preset: Preset, subset: str = "test",
                     checkpoint: str = "checkpoint_last.pt"):
    src, tgt = language_pair(data)
    return [str(BIN / "fairseq-generate"), str(data), "--user-dir", str(PLUGIN),
            "--source-lang", src, "--target-lang", tgt,
            "--path", str(run_dir / "checkpoints" / checkpoint), "--gen-subset", subset,
            "--beam", "4", "--batch-size", str(preset.eval_batch_size), "--post-process", "sentencepiece",
            # with the default multiple of 8, fairseq-generate drops the last, partial batch:
            # the longest test sentences would go unscored
            "--required-batch-size-multiple", "1",
            "--max-len-a", "1.2", "--max-len-b", "10", *(["--fp16"] if preset.fp16 else [])]


class PartOver(Exception):
    """A study part's time is up: the run stopped right after a checkpoint was written and
    continues from it when the same command is given again."""


SAVED = "Saved checkpoint "  # fairseq's checkpoint_utils logs it once a checkpoint is complete on disk


def stop_after_save_past(deadline):
    """A run_logged watch: stop at the first checkpoint written after time.time() passes
    `deadline` (so no update is lost), or None without a deadline."""
    if deadline is None:
        return None
    return lambda line: "part over" if SAVED in line and time.time() > deadline else None


def code_version() -> str:
    """The repository's commit, '+dirty' when tracked files differ from it: what a result
    is traced to."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def record_command(run_dir: Path, name: str, cmd):
    with open(run_dir / "commands.sh", "a") as f:
        f.write(f"# {name}\n{shlex.join(cmd)}\n")


def run_info(run_dir: Path) -> dict:
    info = run_dir / "run.json"
    return json.loads(info.read_text()) if info.exists() else {}


def train(data: Path, run_dir: Path, variant: str, seed: int, preset: Preset, echo=True, overrides=(),
          info=None, watch=None, deadline=None) -> bool:
    """Train one run; False when it had finished before (nothing done). An interrupted run
    continues from its checkpoint_last.pt (fairseq's own resume) and appends to its logs.
    `info` (e.g. a study's setting) is recorded in run.json with the overrides, and each
    attempt with the code's commit and its seconds. `watch(line)` may end the run early
    as finished (e.g. at a plateau; its reason goes to run.json's 'stopped'). Past
    `deadline` (time.time()) the run stops after its next checkpoint and PartOver is raised.
    A run another process is training is left to it (False)."""
    if run_info(run_dir).get("trained"):
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".train.lock", "w") as lock:
        try:  # a second process of the same study (one a core) takes the next run instead
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if run_info(run_dir).get("trained"):  # finished by the other process meanwhile
            return False
        return _train(data, run_dir, variant, seed, preset, echo, overrides, info, watch, deadline)


def _train(data, run_dir, variant, seed, preset, echo, overrides, info, watch, deadline) -> bool:
    cmd = train_command(data, run_dir, variant, seed, preset, overrides)
    (run_dir / "commands.sh").write_text("")
    record_command(run_dir, f"train {variant} seed {seed}", cmd)
    start = time.time()
    part = stop_after_save_past(deadline)
    both = (lambda line: (watch(line) if watch else None) or (part(line) if part else None))
    stopped = run_logged(cmd, run_dir / "train.stdout", echo, append=True,
                         watch=both if (watch or part) else None)
    previous = run_info(run_dir)
    attempts = previous.get("attempts", []) + [{"commit": code_version(), "seconds": round(time.time() - start, 1),
                                                **({"stopped": stopped} if stopped else {})}]
    info = dict(previous, **(info or {}), variant=variant, seed=seed, preset=preset.name, attempts=attempts,
                commit=attempts[-1]["commit"], **({"overrides": list(overrides)} if overrides else {}))
    if stopped == "part over":
        (run_dir / "run.json").write_text(json.dumps(info, indent=1))
        raise PartOver(f"{run_dir} stopped after its checkpoint; the same command continues it")
    info.update(trained=True, train_seconds=round(sum(a["seconds"] for a in attempts), 1),
                **({"stopped": stopped} if stopped else {}))
    (run_dir / "run.json").write_text(json.dumps(info, indent=1))
    return True


def bleu_key(subset: str) -> str:
    return "bleu" if subset == "test" else f"bleu_{subset}"


def evaluate(data: Path, raw: Path, run_dir: Path, preset: Preset, echo=False, subset="test",
             checkpoint="checkpoint_last.pt") -> float:
    """Beam-4 BLEU of the run's `checkpoint` (its last by default) on `subset` (sacrebleu
    against raw/SUBSET.TGT); a score already in run.json is returned without decoding again."""
    import sacrebleu

    key = bleu_key(subset)
    if key in run_info(run_dir):
        return run_info(run_dir)[key]
    src, tgt = language_pair(data)
    cmd = evaluate_command(data, run_dir, preset, subset, checkpoint)
    record_command(run_dir, f"evaluate on {subset} (hypotheses sorted by id, scored by sacrebleu against "
                   f"raw/{subset}.{tgt})", cmd)
    run_logged(cmd, run_dir / f"generate-{subset}.out", echo)
    hyps = {}
    for line in (run_dir / f"generate-{subset}.out").read_text().splitlines():
        if line.startswith("H-"):
            num, _, text = line.split("\t", 2)
            hyps[int(num[2:])] = text
    refs = (raw / f"{subset}.{tgt}").read_text().splitlines()
    if len(hyps) != len(refs):
        raise SystemExit(f"{run_dir}: {len(hyps)} hypotheses for {len(refs)} references of {subset}")
    ordered = [hyps[i] for i in range(len(refs))]
    (run_dir / f"{subset}.hyp.{tgt}").write_text("\n".join(ordered) + "\n")
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(ordered, [refs])
    result = dict(run_info(run_dir), **{key: bleu.score, "bleu_signature": str(metric.get_signature())})
    (run_dir / "run.json").write_text(json.dumps(result, indent=1))
    return bleu.score


def has_subset(data: Path, subset: str) -> bool:
    """Whether the binarized corpus has split `subset` (e.g. test_debian, which is optional)."""
    src, tgt = language_pair(data)
    return all((data / f"{subset}.{src}-{tgt}.{lang}.idx").is_file() for lang in (src, tgt))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("train", help="train one variant")
    t.add_argument("--variant", choices=[*VARIANTS, *TUNING_FREE], required=True,
                   help="a guided variant, or a tuning-free optimizer (configs/nmt/tuning_free.yaml)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--out", type=Path, default=REPO / "runs" / "nmt", help="folder of runs")
    e = sub.add_parser("evaluate", help="beam-4 BLEU of one run's last checkpoint")
    e.add_argument("--run", type=Path, required=True, help="a run folder made by train")
    e.add_argument("--raw", type=Path, required=True, help="folder with the detokenized SUBSET.TGT")
    e.add_argument("--subset", default="test", help="binarized split to translate and score")
    for p in (t, e):
        p.add_argument("--data", type=Path, required=True, help="fairseq-binarized corpus with a guide split")
        p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    start = time.time()
    if args.part == "train":
        run_dir = args.out / f"{args.variant}-seed{args.seed}"
        if not train(args.data, run_dir, args.variant, args.seed, preset):
            print(f"[nmt_recipe] {run_dir} had finished; nothing to do (delete its run.json to retrain)")
    else:
        print(f"BLEU = {evaluate(args.data, args.raw, args.run, preset, subset=args.subset):.2f}")
    print(f"[nmt_recipe] {args.part} done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
