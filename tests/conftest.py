"""Shared fixtures: a small binarized parallel corpus with train/valid/test/guide splits,
and helpers to run fairseq's command-line tools with this plugin."""
import hashlib
import inspect
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# where fairseq-train & co. are: the venv's bin, or $FAIRSEQ_BIN (GPU machine: pip --target)
BIN = Path(os.environ.get("FAIRSEQ_BIN", Path(sys.executable).parent))
PLUGIN = str(REPO / "fairseq_guided")

# A 1-layer, 64-wide transformer: seconds per run on 2 CPU cores.
TINY_MODEL = ("--arch transformer --encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 64 "
              "--decoder-embed-dim 64 --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 "
              "--encoder-attention-heads 2 --decoder-attention-heads 2 --share-all-embeddings").split()


def write_cipher_corpus(folder: Path, sizes: dict, seed: int = 0) -> None:
    """A learnable toy translation: the target is the source reversed, word by word through
    a fixed substitution. Deterministic for a seed."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(40)]
    cipher = {w: f"t{(i * 7) % 40}" for i, w in enumerate(vocab)}
    for split, n in sizes.items():
        with open(folder / f"{split}.src", "w") as fs, open(folder / f"{split}.tgt", "w") as ft:
            for _ in range(n):
                words = [rng.choice(vocab) for _ in range(rng.randint(3, 10))]
                fs.write(" ".join(words) + "\n")
                ft.write(" ".join(cipher[w] for w in reversed(words)) + "\n")


# The quick subset for changes to the math (`bash scripts/run_tests.sh -m fast`): the
# engine against float64 autograd and finite differences, the hyper-parameter maps, the
# groups, the guidance batches, the streamed meta step, the learned state's checkpoint entry and the
# task's guidance hooks (on a real fairseq task, in process); no fairseq command.
FAST_MODULES = {"test_hypergrad_engine", "test_hyperparams", "test_param_groups", "test_param_groups_engine",
                "test_guidance_batches", "test_guidance_fast_path", "test_span_corruption", "test_learned_state",
                "test_adafactor_shapes", "test_guidance_in_process", "test_lamb_edges", "test_hypergrad_edges",
                "test_optimizer_defaults", "test_flag_messages", "test_optimizer_base",
                "test_hyperparams_edges", "test_precision_in_process",
                "test_runner_in_process"}


def pytest_configure(config):
    config.addinivalue_line("markers", "fast: the quick subset for changes to the math (tests/conftest.py)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in FAST_MODULES:
            item.add_marker(pytest.mark.fast)


ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run(cmd, **kwargs):
    """Run a command; return CompletedProcess with stdout+stderr in .stdout."""
    return subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=ENV, **kwargs)


def kill_at_update(cmd, update: int) -> int:
    """Start a fairseq-train command, SIGKILL it once it logs an update >= `update`;
    return the update it had logged."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV)
    killed_at = None
    for line in proc.stdout:
        rows = json_logs(line)
        if rows and int(rows[0]["num_updates"]) >= update:
            proc.send_signal(signal.SIGKILL)
            killed_at = int(rows[0]["num_updates"])
            break
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run ended before being killed"
    return killed_at


def binarize(raw: Path, dest: Path, splits=("train", "valid", "test", "guide")):
    """fairseq-preprocess knows train/valid/test prefixes only: the guide split goes in as a
    second valid prefix (valid1) and is renamed."""
    prefixes = ["--trainpref", raw / "train", "--validpref", f"{raw / 'valid'},{raw / 'guide'}",
                "--testpref", raw / "test"]
    out = run([BIN / "fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
               *prefixes, "--destdir", dest, "--joined-dictionary", "--workers", "1"])
    assert out.returncode == 0, out.stdout
    for f in dest.glob("valid1.*"):
        f.rename(dest / f.name.replace("valid1", "guide", 1))


TINY_SIZES = {"train": 2000, "valid": 100, "test": 100, "guide": 100}
# Opt-in reuse of the tiny corpus across pytest sessions, for the mutation pass: mutmut runs
# a session per mutant, and the fairseq-preprocess process would be most of a glue mutant's time.
CORPUS_CACHE_ENV = "FAIRSEQ_GUIDED_TEST_CORPUS"


def build_tiny_corpus(root: Path) -> Path:
    """The raw splits in `root`, binarized in `root/bin` (returned)."""
    write_cipher_corpus(root, TINY_SIZES)
    binarize(root, root / "bin")
    return root / "bin"


def cached_tiny_corpus(cache: Path) -> Path:
    """The tiny corpus under `cache`, built once per version of the code that writes it. The
    build goes to a staging folder renamed into place, so a folder present is whole and two
    sessions building at once keep one."""
    recipe = inspect.getsource(write_cipher_corpus) + inspect.getsource(binarize) + repr(TINY_SIZES)
    folder = cache / hashlib.sha256(recipe.encode()).hexdigest()[:16]
    if not folder.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".staging-"))
        build_tiny_corpus(staging)
        try:
            staging.rename(folder)
        except OSError:  # another session renamed its build first
            shutil.rmtree(staging)
    return folder / "bin"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    cache = os.environ.get(CORPUS_CACHE_ENV)
    if cache:
        return cached_tiny_corpus(Path(cache).resolve())
    return build_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def train_cmd(data, save_dir, *extra, batching=("--max-tokens", "1000")):
    return [BIN / "fairseq-train", data, "--user-dir", PLUGIN, "--task", "guided_translation",
            *TINY_MODEL, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20", *batching,
            "--save-dir", save_dir, "--log-format", "json", "--log-interval", "1",
            "--no-epoch-checkpoints", "--seed", "1", "--num-workers", "0", *extra]


def json_logs(output: str, tag: str = "train_inner"):
    """fairseq's --log-format json lines of one kind, as dicts."""
    rows = []
    for line in output.splitlines():
        if f"| {tag} |" in line and "{" in line:
            rows.append(json.loads(line[line.index("{"):]))
    return rows


def bleu_of(output: str) -> float:
    match = re.search(r"BLEU4? = ([0-9.]+)", output)
    assert match, output[-3000:]
    return float(match.group(1))
