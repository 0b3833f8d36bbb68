"""python -m guided_recipes.datalib STAGE [options]: one idempotent pipeline stage (see common.Stage).

Folder layout under --dest (the same for every corpus):
  work/corpus.{src,tgt}   extracted training pairs (normalised, not yet cleaned)
  work/clean.{src,tgt}    after filters and deduplication
  raw/{train,valid,test,guide}.{src,tgt}   detokenized text, one sentence a line
  spm.model, spm.vocab    joint sentencepiece model (trained on raw/train only)
  spm/{split}.{src,tgt}   sentencepiece pieces
  bin/                    fairseq-preprocess output, guide as its own split
  {raw,spm,bin}/test_debian.*   held-out Debian descriptions (stage debian-test; optional)
  .stamps/                what each stage did, to skip it next time
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import heldout, offline, subword, textproc, wmt19
from .common import DataError, Stage

SPLITS = subword.SPLITS


def _fmt(counts):
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def cmd_wmt19_urls(a):
    print("\n".join(wmt19.download_list(a.pair, a.corpora)))


def cmd_wmt19_verify(a):
    n = wmt19.verify_raw(a.raw_dir, a.pair, a.corpora, a.skip_checksum,
                         record=a.dest / ".stamps" / "verified.json")
    print(f"[verify] {n} archives whole" + (f" (md5 not checked: {', '.join(a.skip_checksum)})"
                                             if a.skip_checksum else ""), flush=True)


def cmd_wmt19_extract(a):
    src, tgt, x = wmt19.check_pair(a.pair)
    names = list(wmt19.select(x, a.corpora))
    inputs = wmt19.check_raw(a.raw_dir, a.pair, a.corpora)
    outputs = [a.dest / "work" / f"corpus.{lang}" for lang in (src, tgt)]
    outputs += [a.dest / "raw" / f"{split}.{lang}" for split in ("valid", "test") for lang in (src, tgt)]
    Stage(a.dest, "extract", {"pair": a.pair, "corpora": names}, inputs, outputs).run(
        lambda: _fmt(wmt19.extract(a.raw_dir, a.pair, names, a.dest / "work", a.dest / "raw")))


def cmd_offline_extract(a):
    src, tgt = offline.check_pair(a.pair)
    for deb in a.debs:
        if not Path(deb).is_file():
            raise DataError(f"missing package file {deb}")
    inputs = list(a.debs)
    if a.lists_dir:
        for lang in (src, tgt):
            if not offline.translation_files(a.lists_dir, lang):
                raise DataError(f"no Translation-{lang} index in {a.lists_dir} (run the download stage)")
        inputs += [f for lang in (src, tgt) for f in offline.translation_files(a.lists_dir, lang)]
    outputs = [a.dest / "work" / f"corpus.{lang}" for lang in (src, tgt)]

    def work():
        root = a.dest / "work" / "help"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for deb in a.debs:
            done = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)],
                                  stderr=subprocess.PIPE, text=True)
            if done.returncode:
                raise DataError(f"dpkg-deb -x {deb} failed: {done.stderr.strip()}")
        counts = offline.extract(a.pair, root, a.lists_dir, a.dest / "work")
        shutil.rmtree(root)  # 60 MB of HTML, re-made from the .debs whenever needed
        return _fmt(counts)

    Stage(a.dest, "extract", {"pair": a.pair, "debian": bool(a.lists_dir)}, inputs, outputs).run(work)


def cmd_clean(a):
    ins = [a.dest / "work" / f"corpus.{lang}" for lang in (a.src, a.tgt)]
    outs = [a.dest / "work" / f"clean.{lang}" for lang in (a.src, a.tgt)]
    params = {k: getattr(a, k) for k in ("max_words", "min_words", "max_ratio", "ratio_floor",
                                         "drop_identical")}
    Stage(a.dest, "clean", params, ins, outs).run(lambda: textproc.clean(*ins, *outs, **params))


def cmd_split(a):
    ins = [a.dest / "work" / f"clean.{lang}" for lang in (a.src, a.tgt)]
    made = ["train", "guide"] + (["valid", "test"] if a.valid_size or a.test_size else [])
    outs = [a.dest / "raw" / f"{split}.{lang}" for split in made for lang in (a.src, a.tgt)]
    params = {k: getattr(a, k) for k in ("guide_every", "valid_size", "test_size", "seed")}
    Stage(a.dest, "split", params, ins, outs).run(lambda: _fmt(textproc.split(
        *ins, a.dest / "raw", a.src, a.tgt, **params)))


def cmd_spm_train(a):
    ins = [a.dest / "raw" / f"train.{lang}" for lang in (a.src, a.tgt)]
    outs = [a.dest / "spm.model", a.dest / "spm.vocab"]
    params = {"vocab_size": a.vocab_size, "character_coverage": a.character_coverage,
              "input_sentence_size": a.input_sentence_size}

    def work():
        pieces = subword.train_spm(ins, a.dest / "spm", **params)
        return f"{pieces} pieces (asked for {a.vocab_size})"

    Stage(a.dest, "spm_train", params, ins, outs).run(work)


def cmd_spm_encode(a):
    raws = [a.dest / "raw" / f"{split}.{lang}" for split in SPLITS for lang in (a.src, a.tgt)]
    outs = [a.dest / "spm" / p.name for p in raws]

    def work():
        counts = {}
        for raw, out in zip(raws, outs):
            n = subword.encode(a.dest / "spm.model", raw, out)
            counts[raw.stem] = n  # both sides have the same count
        return _fmt(counts) + " lines"

    Stage(a.dest, "spm_encode", {}, [a.dest / "spm.model"] + raws, outs).run(work)


def cmd_binarize(a):
    ins = [a.dest / "spm" / f"{split}.{lang}" for split in SPLITS for lang in (a.src, a.tgt)]
    outs = subword.bin_outputs(a.dest / "bin", a.src, a.tgt)
    Stage(a.dest, "binarize", {}, ins, outs).run(
        lambda: f"{subword.binarize(a.dest / 'spm', a.dest / 'bin', a.src, a.tgt, a.workers)} "
                f"dictionary entries, splits {', '.join(SPLITS)} in {a.dest / 'bin'}")


def cmd_debian_test(a):
    for lang in (a.src, a.tgt):
        if not offline.translation_files(a.lists_dir, lang):
            raise DataError(f"no Translation-{lang} index in {a.lists_dir}: the held-out Debian test set "
                            "needs apt's package-description lists (pass --debian-test-size 0 to go without)")
    filters = {k: getattr(a, k) for k in ("max_words", "min_words", "max_ratio", "ratio_floor",
                                          "drop_identical")}
    params = dict(filters, size=a.size, seed=a.seed)
    ins = [f for lang in (a.src, a.tgt) for f in offline.translation_files(a.lists_dir, lang)]
    ins += [a.dest / "raw" / f"{split}.{lang}" for split in SPLITS for lang in (a.src, a.tgt)]
    ins += [a.dest / "spm.model"] + [a.dest / "bin" / f"dict.{lang}.txt" for lang in (a.src, a.tgt)]
    Stage(a.dest, "debian_test", params, ins, heldout.outputs(a.dest, a.src, a.tgt)).run(
        lambda: _fmt(heldout.make(a.dest, a.lists_dir, a.src, a.tgt, a.size, a.seed, filters)))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m guided_recipes.datalib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)

    def add(name, fn, langs=True, dest=True):
        sp = sub.add_parser(name)
        sp.set_defaults(fn=fn)
        if dest:
            sp.add_argument("--dest", type=Path, required=True)
        if langs:
            sp.add_argument("--src", required=True)
            sp.add_argument("--tgt", required=True)
        return sp

    corpora = lambda s: [c for c in s.split(",") if c]  # noqa: E731
    sp = add("wmt19-urls", cmd_wmt19_urls, langs=False, dest=False)
    sp.add_argument("--pair", required=True)
    sp.add_argument("--corpora", type=corpora, default=[])
    sp = add("wmt19-extract", cmd_wmt19_extract, langs=False)
    sp.add_argument("--pair", required=True)
    sp.add_argument("--raw-dir", type=Path, required=True)
    sp.add_argument("--corpora", type=corpora, default=[])
    sp = add("wmt19-verify", cmd_wmt19_verify, langs=False)
    sp.add_argument("--pair", required=True)
    sp.add_argument("--raw-dir", type=Path, required=True)
    sp.add_argument("--corpora", type=corpora, default=[])
    sp.add_argument("--skip-checksum", type=corpora, default=[],
                    help="files whose md5 is not checked (a newer release than the published one)")
    sp = add("offline-extract", cmd_offline_extract, langs=False)
    sp.add_argument("--pair", required=True)
    sp.add_argument("--debs", type=Path, nargs="+", required=True)
    sp.add_argument("--lists-dir", type=Path, help="apt lists with Translation-* indexes")
    sp = add("clean", cmd_clean)
    sp.add_argument("--max-words", type=int, default=250)
    sp.add_argument("--min-words", type=int, default=1)
    sp.add_argument("--max-ratio", type=float, default=1.5)
    sp.add_argument("--ratio-floor", type=int, default=20)
    sp.add_argument("--drop-identical", action="store_true")
    sp = add("split", cmd_split)
    sp.add_argument("--guide-every", type=int, default=100)
    sp.add_argument("--valid-size", type=int, default=0)
    sp.add_argument("--test-size", type=int, default=0)
    sp.add_argument("--seed", type=int, default=1)
    sp = add("spm-train", cmd_spm_train)
    sp.add_argument("--vocab-size", type=int, required=True)
    sp.add_argument("--character-coverage", type=float, default=0.9999)
    sp.add_argument("--input-sentence-size", type=int, default=2_000_000)
    add("spm-encode", cmd_spm_encode)
    sp = add("binarize", cmd_binarize)
    sp.add_argument("--workers", type=int, default=0, help="0: one a CPU core")

    sp = add("debian-test", cmd_debian_test)
    sp.add_argument("--lists-dir", type=Path, required=True, help="apt lists with Translation-* indexes")
    sp.add_argument("--size", type=int, default=1000, help="pairs to draw")
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--max-words", type=int, default=250)
    sp.add_argument("--min-words", type=int, default=1)
    sp.add_argument("--max-ratio", type=float, default=1.5)
    sp.add_argument("--ratio-floor", type=int, default=20)
    sp.add_argument("--drop-identical", action="store_true")

    a = p.parse_args(argv)
    try:
        a.fn(a)
    except DataError as e:
        print(f"{os.environ.get('DATALIB_PROG', 'datalib')}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
