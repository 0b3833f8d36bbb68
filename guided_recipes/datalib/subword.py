"""The joint sentencepiece model and fairseq binarization, the same for every corpus."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .common import DataError, atomic_write, count_lines, read_lines

SPLITS = ("train", "valid", "test", "guide")


def train_spm(train_files, model_prefix, vocab_size, character_coverage=0.9999,
              input_sentence_size=2_000_000, seed=1):
    """Train a unigram model on both sides of the training split (never guide/valid/test)."""
    import sentencepiece as spm

    tmp = Path(str(model_prefix) + ".tmp")
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=",".join(str(f) for f in train_files), model_prefix=str(tmp),
        vocab_size=vocab_size, model_type="unigram", character_coverage=character_coverage,
        # A sample bounds memory and time on WMT-sized corpora; small corpora are used whole.
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
        # A small corpus may not support the asked size; take what it supports.
        hard_vocab_limit=False, num_threads=os.cpu_count() or 1,
        minloglevel=2)
    for ext in (".model", ".vocab"):
        os.replace(str(tmp) + ext, str(model_prefix) + ext)
    return count_lines(str(model_prefix) + ".vocab")


def encode(model, src_path, out_path, batch=10_000):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    n = 0
    with atomic_write(out_path) as out:
        lines = []
        for line in read_lines(src_path):
            lines.append(line)
            if len(lines) == batch:
                n += _encode_batch(sp, lines, out)
                lines = []
        n += _encode_batch(sp, lines, out)
    return n


def _encode_batch(sp, lines, out):
    for pieces in sp.encode(lines, out_type=str, num_threads=os.cpu_count() or 1):
        out.write(" ".join(pieces) + "\n")
    return len(lines)


def fairseq_preprocess_command():
    """fairseq-preprocess next to this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "fairseq-preprocess"
    found = str(here) if here.is_file() else shutil.which("fairseq-preprocess")
    if not found:
        raise DataError("fairseq-preprocess not found (install fairseq into this Python's "
                        "environment or put it on PATH)")
    return found


def binarize(spm_dir, bin_dir, src, tgt, workers=None):
    """fairseq-preprocess into bin_dir with one joined dictionary; the guide split goes in as
    a second validation prefix (fairseq-preprocess knows only train/valid/test) and its
    valid1.* files are renamed to guide.*. Runs in a scratch folder that replaces bin_dir
    only when complete."""
    bin_dir = Path(bin_dir)
    tmp = bin_dir.with_name(bin_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [fairseq_preprocess_command(), "--source-lang", src, "--target-lang", tgt,
           "--trainpref", f"{spm_dir}/train", "--validpref", f"{spm_dir}/valid,{spm_dir}/guide",
           "--testpref", f"{spm_dir}/test", "--destdir", str(tmp), "--joined-dictionary",
           "--workers", str(workers or os.cpu_count() or 1)]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = result.stdout.strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"fairseq-preprocess failed ({tail[0]}); full log: rerun {' '.join(cmd)}")
    for f in tmp.glob("valid1.*"):
        f.rename(tmp / ("guide." + f.name[len("valid1."):]))
    (tmp / "preprocess.command").write_text(" ".join(cmd) + "\n")
    shutil.rmtree(bin_dir, ignore_errors=True)
    os.replace(tmp, bin_dir)
    return count_lines(bin_dir / f"dict.{src}.txt")


def bin_outputs(bin_dir, src, tgt):
    outs = [Path(bin_dir) / f"dict.{lang}.txt" for lang in (src, tgt)]
    for split in SPLITS:
        for lang in (src, tgt):
            outs += [Path(bin_dir) / f"{split}.{src}-{tgt}.{lang}.{ext}" for ext in ("bin", "idx")]
    return outs
