"""A held-out `guide` split for guided training, from any parallel corpus, in one step.

From raw parallel text (what you would give fairseq-preprocess), the command takes every
Nth training pair out as the guide split and then runs fairseq-preprocess itself, with your
own flags, so train/valid/test/guide share one dictionary built from the remaining
training pairs only:

    python scripts/make_guide_split.py --source-lang de --target-lang en \\
        --trainpref corpus/train --validpref corpus/valid --testpref corpus/test \\
        --destdir data-bin/de-en --joined-dictionary --workers 2

From a corpus fairseq-preprocess has already binarized, it writes a new folder in which
train is split into train and guide by index, straight from the binary files (nothing is
re-binarized, the dictionaries are copied as they are, the original folder is not touched):

    python scripts/make_guide_split.py --from-bin data-bin/de-en --destdir data-bin/de-en-guided

Every Nth pair (the Nth, 2Nth, ...; N = --guide-every, 100 as in the paper) goes to guide
and no longer to train. DESTDIR/guide_split.json records what was done. Flags this command
does not know are passed to fairseq-preprocess as they are.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .common import DataError, atomic_write, count_lines, read_lines
from .subword import fairseq_preprocess_command

SPLIT = "guide"  # the name --guidance-subset reads by default


def is_guide(index: int, every: int) -> bool:
    """The Nth, 2Nth, ... pair (0-based index N-1, 2N-1, ...), as the project's own corpora."""
    return (index + 1) % every == 0


def counts_for(total: int, every: int, where: str) -> tuple:
    """(train, guide) sizes, or a DataError naming `where` when either would be empty."""
    if every < 2:
        raise DataError(f"--guide-every {every} leaves nothing to train on; use 2 or more")
    guide = total // every
    if guide == 0:
        raise DataError(f"{where} has {total} pairs: every {every}th gives an empty guide split "
                        f"(use --guide-every {max(total, 2)} or less)")
    return total - guide, guide


def check_destdir(destdir: Path):
    """New files go to a new (or empty) folder: an existing corpus is never overwritten."""
    if destdir.exists() and any(destdir.iterdir()):
        existing = sorted(destdir.glob(f"{SPLIT}.*"))
        what = f"already has a {SPLIT} split ({existing[0]})" if existing else "is not empty"
        raise DataError(f"--destdir {destdir} {what}: refusing to overwrite; choose a new folder")


def write_record(destdir: Path, record: dict):
    with atomic_write(destdir / "guide_split.json") as f:
        json.dump(record, f, indent=1)


# -- raw text ----------------------------------------------------------------------------
def pair_files(prefix: str, src: str, tgt: str) -> tuple:
    """(source file, target file, pairs) of a fairseq-preprocess prefix; errors name the file."""
    files = (Path(f"{prefix}.{src}"), Path(f"{prefix}.{tgt}"))
    for f in files:
        if not f.is_file():
            raise DataError(f"missing {f} (prefix {prefix}, languages {src}-{tgt})")
    n_src, n_tgt = count_lines(files[0]), count_lines(files[1])
    if n_src != n_tgt:
        raise DataError(f"{files[0]} has {n_src} lines but {files[1]} has {n_tgt}: "
                        "a parallel corpus needs one line per pair in both files")
    return files[0], files[1], n_src


def split_text(prefix: str, src: str, tgt: str, every: int, work: Path) -> dict:
    """work/{train,guide}.{src,tgt} from prefix.{src,tgt}, streamed; returns the counts."""
    src_file, tgt_file, total = pair_files(prefix, src, tgt)
    n_train, n_guide = counts_for(total, every, str(src_file))
    outs = {name: [open(work / f"{name}.{lang}", "w", encoding="utf-8", newline="\n") for lang in (src, tgt)]
            for name in ("train", SPLIT)}
    try:
        for i, (s, t) in enumerate(zip(read_lines(src_file), read_lines(tgt_file))):
            fs, ft = outs[SPLIT if is_guide(i, every) else "train"]
            fs.write(s + "\n")
            ft.write(t + "\n")
    finally:
        for f in (f for pair in outs.values() for f in pair):
            f.close()
    return {"pairs": total, "train": n_train, SPLIT: n_guide}


REFUSED_PREPROCESS_FLAGS = {  # flag: why it cannot be combined with a split of train
    "--only-source": "a guide split needs pairs (source and target)",
    "--align-suffix": "the alignment file would not be split with the pairs",
}


def from_text(args, preprocess_args: list) -> dict:
    src, tgt = args.source_lang, args.target_lang
    for flag, why in REFUSED_PREPROCESS_FLAGS.items():
        if any(a == flag or a.startswith(flag + "=") for a in preprocess_args):
            raise DataError(f"{flag} is not supported here: {why}")
    valids = [p for p in (args.validpref or "").split(",") if p]
    tests = [p for p in (args.testpref or "").split(",") if p]
    for prefix in valids + tests:  # before any work: a misaligned valid/test is the same mistake
        pair_files(prefix, src, tgt)
    destdir = Path(args.destdir)
    check_destdir(destdir)
    work = destdir.with_name(destdir.name + ".guide-split.tmp")
    shutil.rmtree(work, ignore_errors=True)
    (work / "text").mkdir(parents=True)
    try:
        counts = split_text(args.trainpref, src, tgt, args.guide_every, work / "text")
        # fairseq-preprocess knows train/valid/test only: guide goes in as one more valid
        # prefix and its files are renamed (valid, valid1, ... by position).
        guide_name = f"valid{len(valids)}" if valids else "valid"
        cmd = [fairseq_preprocess_command(), "--source-lang", src, "--target-lang", tgt,
               "--trainpref", str(work / "text" / "train"),
               "--validpref", ",".join(valids + [str(work / "text" / SPLIT)]),
               *(["--testpref", ",".join(tests)] if tests else []),
               "--destdir", str(work / "bin"), *preprocess_args]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            sys.stdout.write(done.stdout)
            raise DataError(f"fairseq-preprocess failed (exit {done.returncode}; its output is above)")
        for f in (work / "bin").glob(f"{guide_name}.*"):
            f.rename(f.with_name(SPLIT + f.name[len(guide_name):]))
        destdir.mkdir(parents=True, exist_ok=True)
        for f in (work / "bin").iterdir():
            os.replace(f, destdir / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = dict(counts, source=f"{args.trainpref}.{{{src},{tgt}}}", guide_every=args.guide_every,
                  valid=valids, test=tests, preprocess_args=preprocess_args)
    write_record(destdir, record)
    return record


# -- an already binarized corpus ----------------------------------------------------------
def languages(folder: Path, src: str, tgt: str) -> tuple:
    """The pair whose train split is in `folder`: as given, or the only one there."""
    if src and tgt:
        return src, tgt
    pairs = sorted({f.name.split(".")[1] for f in folder.glob("train.*-*.*.idx")})
    if len(pairs) != 1:
        found = ", ".join(pairs) or "none"
        raise DataError(f"{folder}: cannot tell the language pair (train pairs found: {found}); "
                        "pass --source-lang and --target-lang")
    return tuple(pairs[0].split("-", 1))


def open_binary(prefix: Path):
    """(dataset, builder factory) for a fairseq binary split, keeping its format and dtype."""
    from fairseq.data import indexed_dataset as ids

    impl = ids.infer_dataset_impl(str(prefix))
    if impl == "mmap":
        data = ids.MMapIndexedDataset(str(prefix))
        return data, lambda out: ids.MMapIndexedDatasetBuilder(out, dtype=data._index.dtype)
    if impl in ("cached", "lazy"):
        data = ids.IndexedDataset(str(prefix))
        return data, lambda out: ids.IndexedDatasetBuilder(out, dtype=data.dtype)
    raise DataError(f"{prefix}.idx/.bin: not a fairseq binary split (format {impl})")


def from_bin(args) -> dict:
    from fairseq.data import Dictionary

    folder, destdir = Path(args.from_bin), Path(args.destdir)
    if not folder.is_dir():
        raise DataError(f"--from-bin {folder}: no such folder")
    if destdir.resolve() == folder.resolve():
        raise DataError(f"--destdir {destdir} is the --from-bin folder: write the split corpus to a new folder")
    src, tgt = languages(folder, args.source_lang, args.target_lang)
    pair = f"{src}-{tgt}"
    existing = sorted(folder.glob(f"{SPLIT}.{pair}.*"))
    if existing:
        raise DataError(f"{folder} already has a {SPLIT} split ({existing[0]}): nothing to do")
    check_destdir(destdir)
    sides = {}
    for lang in (src, tgt):
        prefix = folder / f"train.{pair}.{lang}"
        dict_file = folder / f"dict.{lang}.txt"
        if not dict_file.is_file():
            raise DataError(f"missing {dict_file} (the dictionary of {prefix}.bin)")
        data, builder = open_binary(prefix)
        sides[lang] = (prefix, data, builder, len(Dictionary.load(str(dict_file))), dict_file)
    (p_src, d_src, *_), (p_tgt, d_tgt, *_) = sides[src], sides[tgt]
    if len(d_src) != len(d_tgt):
        raise DataError(f"{p_src}.idx holds {len(d_src)} sentences but {p_tgt}.idx holds {len(d_tgt)}: "
                        "not one parallel corpus")
    n_train, n_guide = counts_for(len(d_src), args.guide_every, f"{p_src}.idx")
    work = destdir.with_name(destdir.name + ".guide-split.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        for lang, (prefix, data, builder, dict_size, dict_file) in sides.items():
            split_binary(data, builder, work, f"{pair}.{lang}", args.guide_every, dict_size, prefix, dict_file)
        ours = {f"train.{pair}.{lang}.{ext}" for lang in (src, tgt) for ext in ("bin", "idx")}
        for f in folder.iterdir():  # everything else (dictionaries, valid, test, ...) as it is
            if f.is_file() and f.name not in ours:
                shutil.copy2(f, work / f.name)
        destdir.parent.mkdir(parents=True, exist_ok=True)
        if destdir.exists():
            destdir.rmdir()  # empty (check_destdir)
        os.replace(work, destdir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"pairs": len(d_src), "train": n_train, SPLIT: n_guide, "source": str(folder),
              "guide_every": args.guide_every}
    write_record(destdir, record)
    return record


def split_binary(data, builder, work: Path, name: str, every: int, dict_size: int, prefix: Path, dict_file: Path):
    """work/{train,guide}.NAME.{bin,idx} from `data` by index; a token id past the
    dictionary means the binary and dict.*.txt do not belong together."""
    builders = {split: builder(str(work / f"{split}.{name}.bin")) for split in ("train", SPLIT)}
    for i in range(len(data)):
        item = data[i]
        if len(item) and int(item.max()) >= dict_size:
            raise DataError(f"{prefix}.bin holds token id {int(item.max())} (sentence {i}) but {dict_file} "
                            f"has {dict_size} entries: the binary was made with another dictionary")
        builders[SPLIT if is_guide(i, every) else "train"].add_item(item)
    for split, b in builders.items():
        b.finalize(str(work / f"{split}.{name}.idx"))


def parser():
    # no abbreviations: a fairseq-preprocess flag must reach it as typed, never be taken for
    # a prefix of one of ours
    p = argparse.ArgumentParser(prog="python scripts/make_guide_split.py", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-bin", metavar="DIR", help="a folder fairseq-preprocess wrote (dict.*.txt, "
                   "train.SRC-TGT.*.bin/.idx); without it the input is raw text (--trainpref ...)")
    p.add_argument("--destdir", required=True, help="new (or empty) folder for the corpus with its guide split")
    p.add_argument("-s", "--source-lang", help="source language (raw text: required; --from-bin: "
                   "inferred when the folder holds one pair)")
    p.add_argument("-t", "--target-lang", help="target language (as --source-lang)")
    p.add_argument("--trainpref", help="raw text: training pairs PREFIX.SRC, PREFIX.TGT")
    p.add_argument("--validpref", help="raw text: comma-separated valid prefixes, binarized as they are")
    p.add_argument("--testpref", help="raw text: comma-separated test prefixes, binarized as they are")
    p.add_argument("--guide-every", type=int, default=100,
                   help="every Nth training pair goes to guide (default 100, as in the paper)")
    return p


def main(argv=None):
    args, rest = parser().parse_known_args(argv)
    try:
        if args.from_bin:
            if args.trainpref or args.validpref or args.testpref or rest:
                raise DataError("--from-bin splits an existing binary corpus: "
                                f"{' '.join(rest) or '--trainpref/--validpref/--testpref'} do not apply")
            record = from_bin(args)
        else:
            if not (args.trainpref and args.source_lang and args.target_lang):
                raise DataError("raw text needs --trainpref, --source-lang and --target-lang "
                                "(or --from-bin DIR for a binarized corpus)")
            record = from_text(args, rest)
    except DataError as e:
        print(f"make_guide_split: error: {e}", file=sys.stderr)
        return 2
    print(f"make_guide_split: {args.destdir}: train {record['train']} pairs, {SPLIT} {record[SPLIT]} "
          f"(every {args.guide_every}th of {record['pairs']})", flush=True)
    return 0
