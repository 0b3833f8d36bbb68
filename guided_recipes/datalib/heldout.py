"""A held-out domain test set: Debian package descriptions (de-en and the other pairs that
have a Translation-X index), never trained on, scored beside LibreOffice help's own test.

The pairs come from offline.align_debian (the --with-debian code), go through the same
filters as the training corpus (textproc.verdict), and any pair whose source or target
sentence occurs in raw/{train,guide,valid,test} is dropped, so no test sentence was seen in
training. They are then cut into pieces with the corpus's own sentencepiece model and
binarized with its dictionary (fairseq-preprocess --srcdict/--tgtdict), as split SPLIT.
"""

import os
import random
import shutil
import subprocess
from pathlib import Path

from .common import DataError, read_lines, write_pairs
from .offline import align_debian
from .subword import encode, fairseq_preprocess_command
from .textproc import normalise, verdict

SPLIT = "test_debian"
IN_CORPUS = ("train", "guide", "valid", "test")


def outputs(dest, src, tgt):
    dest = Path(dest)
    outs = [dest / d / f"{SPLIT}.{lang}" for d in ("raw", "spm") for lang in (src, tgt)]
    return outs + [dest / "bin" / f"{SPLIT}.{src}-{tgt}.{lang}.{ext}" for lang in (src, tgt)
                   for ext in ("bin", "idx")]


def draw(lists_dir, raw_dir, src, tgt, size, seed, filters):
    """Up to `size` filtered, unique Debian pairs sharing no sentence with the corpus's
    splits, drawn at random with `seed`; returns (pairs, counts)."""
    pairs, records = align_debian(lists_dir, src, tgt)
    seen_src, seen_tgt = set(), set()
    for split in IN_CORPUS:
        for lang, seen in ((src, seen_src), (tgt, seen_tgt)):
            path = Path(raw_dir) / f"{split}.{lang}"
            if path.is_file():
                seen.update(read_lines(path))
    kept, unique, counts = [], set(), {"descriptions": records, "pairs": len(pairs), "filtered": 0,
                                       "in_corpus": 0, "duplicate": 0}
    for s, t in pairs:
        s, t = normalise(s), normalise(t)
        if verdict(s, t, **filters) is not None:
            counts["filtered"] += 1
        elif s in seen_src or t in seen_tgt:
            counts["in_corpus"] += 1
        elif (s, t) in unique:
            counts["duplicate"] += 1
        else:
            unique.add((s, t))
            kept.append((s, t))
    if not kept:
        raise DataError(f"no Debian description pair left for {SPLIT} (lists in {lists_dir})")
    chosen = random.Random(seed).sample(range(len(kept)), min(size, len(kept)))
    counts[SPLIT] = len(chosen)
    return [kept[i] for i in chosen], counts


def binarize(dest, src, tgt, workers=1):
    """spm/SPLIT.* -> bin/SPLIT.*, with the dictionaries the corpus's bin/ already has (the
    models' vocabulary), through a scratch folder."""
    dest = Path(dest)
    tmp = dest / "work" / f"{SPLIT}.bin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [fairseq_preprocess_command(), "--source-lang", src, "--target-lang", tgt,
           "--srcdict", str(dest / "bin" / f"dict.{src}.txt"), "--tgtdict", str(dest / "bin" / f"dict.{tgt}.txt"),
           "--testpref", str(dest / "spm" / SPLIT), "--destdir", str(tmp), "--workers", str(workers)]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = result.stdout.strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"fairseq-preprocess of {SPLIT} failed ({tail[0]}); rerun {' '.join(cmd)}")
    for lang in (src, tgt):
        for ext in ("bin", "idx"):
            os.replace(tmp / f"test.{src}-{tgt}.{lang}.{ext}", dest / "bin" / f"{SPLIT}.{src}-{tgt}.{lang}.{ext}")
    shutil.rmtree(tmp)


def make(dest, lists_dir, src, tgt, size, seed, filters):
    dest = Path(dest)
    chosen, counts = draw(lists_dir, dest / "raw", src, tgt, size, seed, filters)
    write_pairs(chosen, dest / "raw" / f"{SPLIT}.{src}", dest / "raw" / f"{SPLIT}.{tgt}")
    for lang in (src, tgt):
        encode(dest / "spm.model", dest / "raw" / f"{SPLIT}.{lang}", dest / "spm" / f"{SPLIT}.{lang}")
    binarize(dest, src, tgt)
    return counts
