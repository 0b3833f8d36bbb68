"""Real parallel text that Debian's archive carries: LibreOffice's offline help, and
(optionally) the translated package descriptions.

LibreOffice ships each help page in every language with the same file names and the same
id attribute on every paragraph and heading, so (file, id) aligns them exactly.
"""

import subprocess
from html.parser import HTMLParser
from pathlib import Path

from .common import DataError, atomic_write
from .textproc import normalise

PAIRS = ("de-en", "en-de", "fr-en", "en-fr", "fi-en", "en-fi")
HELP_PACKAGE = {"de": "libreoffice-help-de", "fr": "libreoffice-help-fr",
                "fi": "libreoffice-help-fi", "en": "libreoffice-help-en-us"}
HELP_DIR = {"de": "de", "fr": "fr", "fi": "fi", "en": "en-US"}
_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}
_VOID = {"br", "img", "input", "meta", "link", "hr", "wbr", "source", "area", "col", "embed"}


def check_pair(pair):
    if pair not in PAIRS:
        raise DataError(f"unknown pair '{pair}' (known: {', '.join(PAIRS)})")
    return pair.split("-")


class _Paragraphs(HTMLParser):
    """(id, text) of every paragraph or heading that has an id.

    Inline system/application switches hold one hidden variant per case (MAC, default,
    CALC, ...) that scripts un-hide in a browser; only the 'default' variant is kept, or a
    shortcut would read "CommandCtrl + F"."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found = []
        self.block = None  # (id, tag, parts, stack of (tag, hidden))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.block is None:
            if tag in _BLOCKS and attrs.get("id"):
                self.block = (attrs["id"], tag, [], [])
            return
        if tag == "br":
            self.block[2].append(" ")
        if tag in _VOID:
            return
        hidden = "hidden" in attrs and not (attrs.get("id") or "").startswith("default")
        self.block[3].append((tag, hidden))

    def handle_endtag(self, tag):
        if self.block is None:
            return
        bid, btag, parts, stack = self.block
        if tag == btag and not any(t == tag for t, _ in stack):
            self.found.append((bid, normalise("".join(parts))))
            self.block = None
            return
        while stack:  # tolerate unclosed inline tags
            if stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.block is not None and not any(h for _, h in self.block[3]):
            self.block[2].append(data)


def paragraphs(path):
    parser = _Paragraphs()
    parser.feed(Path(path).read_text(encoding="utf-8", errors="replace"))
    parser.close()
    by_id, repeated = {}, set()
    for pid, text in parser.found:
        if pid in by_id and by_id[pid] != text:
            repeated.add(pid)
        by_id.setdefault(pid, text)
    for pid in repeated:  # an id used for two different texts cannot be aligned
        del by_id[pid]
    return by_id


def align_help(root, src, tgt):
    """Pairs from ROOT/usr/share/libreoffice/help/{src,tgt}/text/**.html, in file then
    document order; returns (pairs, number of files paired)."""
    base = Path(root) / "usr/share/libreoffice/help"
    dirs = [base / HELP_DIR[lang] for lang in (src, tgt)]
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"missing help folder {d} (was the .deb unpacked?)")
    pairs, files = [], 0
    for src_file in sorted((dirs[0] / "text").rglob("*.html")):
        tgt_file = dirs[1] / src_file.relative_to(dirs[0])
        if not tgt_file.is_file():
            continue
        files += 1
        tgt_pars = paragraphs(tgt_file)
        for pid, text in paragraphs(src_file).items():
            if pid in tgt_pars:
                pairs.append((text, tgt_pars[pid]))
    return pairs, files


def _records(path):
    """deb822 records of an apt Translation-* index (any compression apt knows)."""
    helper = Path("/usr/lib/apt/apt-helper")
    if not helper.is_file():
        raise DataError(f"missing tool {helper} (part of apt; decompresses {path.name})")
    done = subprocess.run([str(helper), "cat-file", str(path)], stdout=subprocess.PIPE)
    if done.returncode:
        raise DataError(f"apt-helper cat-file {path} failed")
    text = done.stdout.decode("utf-8", errors="replace")
    for block in text.split("\n\n"):
        record, key = {}, None
        for line in block.split("\n"):
            if line.startswith((" ", "\t")) and key:
                record[key] += "\n" + line
            elif ":" in line:
                key, value = line.split(":", 1)
                record[key] = value.strip()
        if record:
            yield record


def _description(record, lang):
    """[synopsis, paragraph, ...] of a Description-LANG field."""
    value = record.get(f"Description-{lang}")
    if value is None:
        return None
    first, *rest = value.split("\n")
    paragraphs, current = [], []
    for line in rest:
        if line.strip() == ".":
            paragraphs.append(current)
            current = []
        else:
            current.append(line.strip())
    paragraphs.append(current)
    return [first] + [" ".join(p) for p in paragraphs if p]


def translation_files(lists_dir, lang):
    return sorted(Path(lists_dir).glob(f"*_i18n_Translation-{lang}*"))


def align_debian(lists_dir, src, tgt):
    """Package descriptions paired by Description-md5 (the md5 of the English original);
    synopses always pair, long-description paragraphs by position when their counts agree."""
    texts = {}
    for lang in (src, tgt):
        files = translation_files(lists_dir, lang)
        if not files:
            raise DataError(f"no Translation-{lang} index in {lists_dir}")
        texts[lang] = {}
        for f in files:
            for record in _records(f):
                desc = _description(record, lang)
                if desc and record.get("Description-md5"):
                    texts[lang].setdefault(record["Description-md5"], desc)
    pairs, records = [], 0
    for md5, src_desc in texts[src].items():
        tgt_desc = texts[tgt].get(md5)
        if tgt_desc is None:
            continue
        records += 1
        pairs.append((src_desc[0], tgt_desc[0]))
        if len(src_desc) == len(tgt_desc):
            pairs += zip(src_desc[1:], tgt_desc[1:])
    return pairs, records


def extract(pair, help_root, lists_dir, out_dir):
    """work/corpus.{src,tgt}: LibreOffice help pairs, then Debian description pairs if
    lists_dir is given. Returns the counts."""
    src, tgt = check_pair(pair)
    counts = {}
    pairs, counts["help_files"] = align_help(help_root, src, tgt)
    counts["help_pairs"] = len(pairs)
    if lists_dir:
        debian, counts["debian_descriptions"] = align_debian(lists_dir, src, tgt)
        counts["debian_pairs"] = len(debian)
        pairs += debian
    with atomic_write(Path(out_dir) / f"corpus.{src}") as fs, \
            atomic_write(Path(out_dir) / f"corpus.{tgt}") as ft:
        for s, t in pairs:
            fs.write(normalise(s) + "\n")
            ft.write(normalise(t) + "\n")
    return counts
