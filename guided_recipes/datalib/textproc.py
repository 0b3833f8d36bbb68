"""Normalising, cleaning and splitting parallel text (shared by every corpus)."""

import hashlib
import random
import re
from array import array

import numpy as np

from .common import DataError, atomic_write, count_lines, read_pairs, write_pairs

# C0/C1 controls and BOM/zero-width no-break space. Other whitespace (tab, U+2028, NBSP,
# ...) is folded to one space by str.split(), which also keeps it out of line ends.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ufeff]")


def normalise(text):
    return " ".join(_CONTROL.sub("", text).split())


def _pair_hash(src, tgt):
    # 8 bytes a pair: a 40M-pair WMT corpus needs 320 MB here, not a set of strings.
    h = hashlib.blake2b(src.encode("utf-8"), digest_size=8)
    h.update(b"\0")
    h.update(tgt.encode("utf-8"))
    return int.from_bytes(h.digest(), "little")


def verdict(src, tgt, max_words, min_words, max_ratio, ratio_floor, drop_identical):
    """Why a pair is dropped, or None to keep it."""
    if not src or not tgt:
        return "empty"
    if "\ufffd" in src or "\ufffd" in tgt:
        return "bad_utf8"
    ws, wt = src.count(" ") + 1, tgt.count(" ") + 1
    if max(ws, wt) > max_words:
        return "too_long"
    if min(ws, wt) < min_words:
        return "too_short"
    # Characters, not words: Finnish and Lithuanian need far fewer words than English for
    # the same sentence. The floor keeps short pairs ("OK" / "Bestätigen") from being
    # judged by a ratio of tiny numbers.
    ls, lt = len(src) + ratio_floor, len(tgt) + ratio_floor
    if max(ls, lt) > max_ratio * min(ls, lt):
        return "ratio"
    if drop_identical and src == tgt:
        return "identical"
    return None


def clean(src_in, tgt_in, src_out, tgt_out, max_words=250, min_words=1, max_ratio=1.5,
          ratio_floor=20, drop_identical=False):
    """Filter and deduplicate (first occurrence kept, order preserved) in two streaming
    passes; memory is 9 bytes a pair."""
    reasons, hashes, keep = {}, array("Q"), bytearray()
    for src, tgt in read_pairs(src_in, tgt_in):
        why = verdict(src, tgt, max_words, min_words, max_ratio, ratio_floor, drop_identical)
        keep.append(why is None)
        if why is None:
            hashes.append(_pair_hash(src, tgt))
        else:
            reasons[why] = reasons.get(why, 0) + 1
    keep = np.frombuffer(keep, dtype=np.uint8).astype(bool)
    _, first = np.unique(np.frombuffer(hashes, dtype=np.uint64), return_index=True)
    unique = np.zeros(len(hashes), dtype=bool)
    unique[first] = True
    reasons["duplicate"] = int(len(hashes) - len(first))
    keep[np.flatnonzero(keep)] = unique

    kept = write_pairs((p for p, k in zip(read_pairs(src_in, tgt_in), keep) if k),
                       src_out, tgt_out)
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()) if v)
    return f"{len(keep)} pairs in, {kept} kept; dropped: {dropped or 'none'}"


def split(src_in, tgt_in, out, src_lang, tgt_lang, guide_every=100, valid_size=0,
          test_size=0, seed=1):
    """Write out/{train,guide[,valid,test]}.{src_lang,tgt_lang}; returns the counts.

    valid and test, if asked for, are drawn at random; training pairs that share a source
    or a target sentence with them are dropped, so no test sentence was seen in training.
    Of the remaining pairs, in corpus order, every guide_every-th one (the guide_every-th,
    2*guide_every-th, ...) becomes the guidance split and is left out of train. Input pairs
    are unique (clean), so no pair can be in two splits. Streams: only valid and test are
    held in memory.
    """
    if guide_every == 1:  # sentencepiece would then fail on an empty train split
        raise DataError("--guide-every 1 puts every pair in guide and none in train; use 2 or more "
                        "(or 0 for no guide split)")
    counts = {}
    held = {}
    if valid_size or test_size:
        n = count_lines(src_in)
        if valid_size + test_size >= n:
            raise DataError(f"only {n} pairs: too few for --valid-size {valid_size} "
                            f"and --test-size {test_size}")
        drawn = random.Random(seed).sample(range(n), valid_size + test_size)
        held = {i: ("valid" if k < valid_size else "test") for k, i in enumerate(drawn)}
        chosen = {"valid": {}, "test": {}}
        for i, pair in enumerate(read_pairs(src_in, tgt_in)):
            if i in held:
                chosen[held[i]][i] = pair
        seen_src, seen_tgt = set(), set()
        for name in ("valid", "test"):
            # In the order drawn, so the same seed gives the same files.
            data = [chosen[name][i] for i in drawn if held[i] == name]
            counts[name] = write_pairs(data, out / f"{name}.{src_lang}", out / f"{name}.{tgt_lang}")
            seen_src.update(s for s, _ in data)
            seen_tgt.update(t for _, t in data)
        counts["overlap_dropped"] = 0

    def rest():
        for i, (s, t) in enumerate(read_pairs(src_in, tgt_in)):
            if i in held:
                continue
            if held and (s in seen_src or t in seen_tgt):
                counts["overlap_dropped"] += 1
                continue
            yield s, t

    with atomic_write(out / f"train.{src_lang}") as ts, atomic_write(out / f"train.{tgt_lang}") as tt, \
            atomic_write(out / f"guide.{src_lang}") as gs, atomic_write(out / f"guide.{tgt_lang}") as gt:
        counts["train"] = counts["guide"] = 0
        for k, (s, t) in enumerate(rest(), 1):
            name, fs, ft = ("guide", gs, gt) if guide_every and k % guide_every == 0 else ("train", ts, tt)
            fs.write(s + "\n")
            ft.write(t + "\n")
            counts[name] += 1
    if counts["train"] == 0:
        raise DataError(f"{src_in}: no pair left for train after the held-out splits")
    return counts
