"""WMT19 news-task corpora for de-en, fi-en and lt-en: where they come from and how to read
them as shipped (tsv.gz, TMX, plain-text pairs inside tgz/zip, sgm inside tgz).

The corpus lists follow the WMT19 task page (statmt.org/wmt19/translation-task.html) as
also encoded in the HuggingFace/TFDS wmt19 builders; dev is newstest2018 (newsdev2019 for
Lithuanian, which had no earlier test set), test is newstest2019. The sgm extraction matches
sacrebleu's (no entity unescaping, whitespace collapsed), so raw/test.* equal sacrebleu's
`-t wmt19` source and reference byte for byte.
"""

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import zipfile
import zlib
import xml.etree.ElementTree as ET
from pathlib import Path

from .common import DataError, atomic_write, count_lines, read_pairs, write_pairs
from .textproc import normalise

PAIRS = ("de-en", "en-de", "fi-en", "en-fi", "lt-en", "en-lt")
_SM = "http://www.statmt.org"
_DSM = "http://data.statmt.org"


def corpora(x):
    """Training corpora of the pair x-en: name -> (url, archive file, how to read it).

    Readers: ("tsv", member or None, column of x) | ("tmx", member or None) |
    ("plain", member of x, member of en).
    """
    table = {
        "europarl_v9": (f"{_SM}/europarl/v9/training/europarl-v9.{x}-en.tsv.gz", ("tsv", None, 0)),
        "paracrawl_v3": ("https://s3.amazonaws.com/web-language-models/paracrawl/release3/"
                         f"en-{x}.bicleaner07.tmx.gz", ("tmx", None)),
        "wikititles_v1": (f"{_DSM}/wikititles/v1/wikititles-v1.{x}-en.tsv.gz", ("tsv", None, 0)),
    }
    if x == "de":
        table["commoncrawl"] = (f"{_SM}/wmt13/training-parallel-commoncrawl.tgz",
                                ("plain", "commoncrawl.de-en.de", "commoncrawl.de-en.en"))
        table["news_commentary_v14"] = (
            f"{_DSM}/news-commentary/v14/training/news-commentary-v14.de-en.tsv.gz", ("tsv", None, 0))
        table["rapid_2019"] = ("https://s3-eu-west-1.amazonaws.com/tilde-model/rapid2019.de-en.zip",
                               ("plain", "rapid2019.de-en.de", "rapid2019.de-en.en"))
    else:
        table["rapid_2016"] = (f"https://tilde-model.s3-eu-west-1.amazonaws.com/rapid2016.en-{x}.tmx.zip",
                               ("tmx", f"rapid2016.en-{x}.tmx"))
    return {name: (url, url.rsplit("/", 1)[1], reader) for name, (url, reader) in table.items()}


DEV_URL = f"{_DSM}/wmt19/translation-task/dev.tgz"
TEST_URL = f"{_DSM}/wmt19/translation-task/test.tgz"
# From sacrebleu's dataset table: the official tarballs.
MD5 = {"dev.tgz": "f2ec7af5947c19e0cacb3882eb208002", "test.tgz": "84de7162d158e28403103b01aeefc39a"}


def check_pair(pair):
    if pair not in PAIRS:
        raise DataError(f"unknown pair '{pair}' (known: {', '.join(PAIRS)})")
    src, tgt = pair.split("-")
    return src, tgt, (src if tgt == "en" else tgt)


def select(x, names):
    table = corpora(x)
    if not names:
        return table
    unknown = [n for n in names if n not in table]
    if unknown:
        raise DataError(f"unknown corpus '{unknown[0]}' for {x}-en (known: {', '.join(table)})")
    return {n: table[n] for n in names}


def dev_test_members(src, tgt):
    """(archive, src member, ref member) for valid and test, in the translation direction.
    Before 2019 dev sets were the same in both directions, so the reversed file pair is an
    accepted fallback for valid."""
    x = src if tgt == "en" else tgt
    dev = "newsdev2019" if x == "lt" else "newstest2018"
    valid = [("dev.tgz", f"dev/{dev}-{src}{tgt}-src.{src}.sgm", f"dev/{dev}-{src}{tgt}-ref.{tgt}.sgm"),
             ("dev.tgz", f"dev/{dev}-{tgt}{src}-ref.{src}.sgm", f"dev/{dev}-{tgt}{src}-src.{tgt}.sgm")]
    test = [("test.tgz", f"sgm/newstest2019-{src}{tgt}-src.{src}.sgm",
             f"sgm/newstest2019-{src}{tgt}-ref.{tgt}.sgm")]
    return {"valid": valid, "test": test}


def download_list(pair, names):
    """'URL FILE' lines for the download stage."""
    src, tgt, x = check_pair(pair)
    lines = [f"{url} {fname}" for url, fname, _ in select(x, names).values()]
    return lines + [f"{DEV_URL} dev.tgz", f"{TEST_URL} test.tgz"]


def _candidates(raw, name):
    """RAW/name, then one level of subfolder (RAW/*/name): archives unpacked into a folder
    of their own, or downloads kept in one."""
    return [raw / name] + sorted(raw.glob(f"*/{name}"))


class Archive:
    """Members of a downloaded file. A member already unpacked at RAW/member or RAW/basename
    (or one subfolder down) is used as is; otherwise it is read from the archive RAW/fname.
    A gunzipped single file (europarl-v9.de-en.tsv for europarl-v9.de-en.tsv.gz) stands for
    its .gz."""

    def __init__(self, raw_dir, fname):
        self.raw = Path(raw_dir)
        names = [fname] + ([fname[:-3]] if fname.endswith((".tsv.gz", ".tmx.gz")) else [])
        found = [c for n in names for c in _candidates(self.raw, n) if c.is_file()]
        self.path = found[0] if found else self.raw / fname
        self._names = None

    def unpacked(self, member):
        for name in (member, Path(member).name):
            for cand in _candidates(self.raw, name):
                if cand.is_file():
                    return cand
        return None

    def source(self, member=None):
        """The file on disk that member comes from."""
        return (member and self.unpacked(member)) or self.path

    def has(self, member=None):
        if member and self.unpacked(member):
            return True
        if not self.path.is_file():
            return False
        return member is None or self._find(member) is not None

    def _find(self, member):
        if self._names is None:
            if zipfile.is_zipfile(self.path):
                with zipfile.ZipFile(self.path) as z:
                    self._names = z.namelist()
            else:
                with tarfile.open(self.path) as t:
                    self._names = t.getnames()
        # Archives differ in whether they put a folder in front; match on the tail.
        base = Path(member).name
        for n in self._names:
            if n == member or n.endswith("/" + member) or n == base or n.endswith("/" + base):
                return n
        return None

    def open_bytes(self, member=None):
        """A binary stream of the member, or of the (gunzipped) file itself if member is None."""
        path = self.source(member)
        if not path.is_file():
            raise DataError(f"missing raw file {path}" + (f" (needed for {member})" if member else ""))
        if path != self.path or member is None:
            return gzip.open(path) if path.suffix == ".gz" else open(path, "rb")
        name = self._find(member)
        if name is None:
            raise DataError(f"{self.path} has no member {member}")
        if zipfile.is_zipfile(self.path):
            return zipfile.ZipFile(self.path).open(name)
        return tarfile.open(self.path).extractfile(name)

    def lines(self, member=None):
        with self.open_bytes(member) as f:
            for line in io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="\n"):
                yield line[:-1] if line.endswith("\n") else line


def read_tsv(archive, member, x_col, x_first):
    """Two-column tsv. A line with another number of columns is yielded as an empty pair,
    so that the clean stage counts it (as 'empty') rather than it vanishing silently."""
    for line in archive.lines(member):
        cols = line.split("\t")
        if len(cols) != 2:
            yield "", ""
            continue
        x_text, en_text = cols[x_col], cols[1 - x_col]
        yield (x_text, en_text) if x_first else (en_text, x_text)


def read_tmx(archive, member, x, x_first):
    def lang_of(tuv):
        for k, v in tuv.attrib.items():
            if k.endswith("lang"):  # xml:lang (namespaced) or a plain lang attribute
                return re.split("[-_]", v.lower())[0]
        return None

    parent = None
    with archive.open_bytes(member) as f:
        for event, elem in ET.iterparse(f, events=("start", "end")):
            if event == "start":
                if elem.tag == "body":
                    parent = elem
                continue
            if elem.tag != "tu":
                continue
            segs = {}
            for tuv in elem.iter("tuv"):
                seg = tuv.find("seg")
                segs[lang_of(tuv)] = "".join(seg.itertext()) if seg is not None else ""
            # A ParaCrawl TMX does not fit in memory as a tree: drop what has been read.
            (parent if parent is not None else elem).clear()
            x_text, en_text = segs.get(x, ""), segs.get("en", "")
            yield (x_text, en_text) if x_first else (en_text, x_text)


def read_plain(archive, x_member, en_member, x_first, scratch):
    """Two line-aligned files. Each is first copied out of the archive on its own: reading
    both in step straight from a tar.gz would seek (re-decompress) back and forth."""
    paths = []
    for member in (x_member, en_member):
        path = archive.unpacked(member)
        if path is None:
            path = Path(scratch) / Path(member).name
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open_bytes(member) as f_in, open(path, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out, 1 << 20)
            except BaseException:
                for p in paths + [path]:  # no partial copies left in the scratch folder
                    if p.parent == Path(scratch):
                        p.unlink(missing_ok=True)
                raise
        paths.append(path)
    n_x, n_en = count_lines(paths[0]), count_lines(paths[1])
    if n_x != n_en:
        raise DataError(f"{archive.path}: {x_member} has {n_x} lines, {en_member} has {n_en}")
    try:
        for x_text, en_text in read_pairs(*paths):
            yield (x_text, en_text) if x_first else (en_text, x_text)
    finally:
        for path in paths:
            if path.parent == Path(scratch):
                path.unlink()


def read_corpus(raw_dir, fname, reader, x, x_first, scratch):
    archive = Archive(raw_dir, fname)
    kind = reader[0]
    if kind == "tsv":
        return read_tsv(archive, reader[1], reader[2], x_first)
    if kind == "tmx":
        return read_tmx(archive, reader[1], x, x_first)
    return read_plain(archive, reader[1], reader[2], x_first, scratch)


def read_sgm(archive, member):
    """Segments exactly as sacrebleu extracts them from WMT's sgm files."""
    out = []
    for line in archive.lines(member):
        if line.startswith("<seg "):
            out.append(" ".join(re.sub(r"<seg.*?>(.*)</seg>.*?", r"\1", line).split()))
    return out


def _members(reader):
    return [m for m in reader[1:] if isinstance(m, str)] or [None]


def _dev_test_choice(raw_dir, src, tgt):
    """split -> (Archive, src member, ref member); the first option present wins."""
    chosen = {}
    for split, options in dev_test_members(src, tgt).items():
        for fname, a, b in options:
            archive = Archive(raw_dir, fname)
            if archive.has(a) and archive.has(b):
                chosen[split] = (archive, a, b)
                break
        else:
            fname, a, _ = options[0]
            what = Path(raw_dir) / fname
            raise DataError(f"missing raw file {what} ({split} set)" if not what.is_file()
                            else f"{what} has no {a} ({split} set)")
    return chosen


# -- verifying the raw files before any work ------------------------------------------------
_MAGIC = {".gz": b"\x1f\x8b", ".tgz": b"\x1f\x8b", ".zip": b"PK\x03\x04"}
READ_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, ET.ParseError,
               UnicodeError, ValueError)


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_archive(path, skip_checksum=()):
    """Raise DataError naming the file unless it is the published file (md5, where WMT
    publishes one) and a whole archive of its kind (every byte read and CRC-checked)."""
    name = path.name
    if name in MD5 and name not in skip_checksum:
        got = _md5(path)
        if got != MD5[name]:
            raise DataError(f"{path}: md5 {got} is not the published {MD5[name]}; delete it and "
                            f"download it again (for a newer release of {name}, pass "
                            f"--skip-checksum {name})")
    kind = ".tgz" if name.endswith(".tgz") else path.suffix
    if kind not in _MAGIC:
        return  # an unpacked or gunzipped plain file: nothing to check
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(_MAGIC[kind]):
        shown = head[:30].decode("utf-8", "replace").strip()
        raise DataError(f"{path} is not a {kind} archive (it starts with {shown!r}: an error page "
                        f"saved in its place?); delete it and download it again")
    try:
        if kind == ".zip":
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            if bad:
                raise DataError(f"{path}: member {bad} fails its CRC check; delete the file and "
                                f"download it again")
        elif kind == ".tgz":
            with tarfile.open(path, "r:gz") as t:
                for member in t:
                    if member.isfile():
                        shutil.copyfileobj(t.extractfile(member), _Sink(), 1 << 20)
        else:
            with gzip.open(path) as g:
                while g.read(1 << 20):
                    pass
    except READ_ERRORS as e:
        raise DataError(f"{path} is damaged or truncated ({type(e).__name__}: {e}); delete it and "
                        f"download it again") from None


class _Sink:
    def write(self, data):
        return len(data)


def verify_raw(raw_dir, pair, names, skip_checksum=(), record=None):
    """verify_archive for every archive file the extraction will read. `record`: a JSON file
    of the files already verified (size, mtime), so a rerun does not read them all again."""
    src, tgt, x = check_pair(pair)
    files = {Archive(raw_dir, fname).path for _, fname, _ in select(x, names).values()}
    files |= {Archive(raw_dir, f).path for f in ("dev.tgz", "test.tgz")}
    done = json.loads(record.read_text()) if record and record.is_file() else {}
    for path in sorted(p for p in files if p.is_file()):
        key, state = str(path.resolve()), [path.stat().st_size, path.stat().st_mtime_ns, sorted(skip_checksum)]
        if done.get(key) == state:
            continue
        verify_archive(path, skip_checksum)
        done[key] = state
        if record:
            record.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(record) as f:
                json.dump(done, f, indent=1)
    return len(files)


def check_raw(raw_dir, pair, names):
    """Fail before any work if a needed raw file is missing, naming it; returns the files
    whose change must redo the extraction."""
    src, tgt, x = check_pair(pair)
    files = []
    for name, (url, fname, reader) in select(x, names).items():
        archive = Archive(raw_dir, fname)
        for member in _members(reader):
            if not (member and archive.unpacked(member)) and not archive.path.is_file():
                raise DataError(f"missing raw file {archive.path} (corpus {name}, from {url}; "
                                f"or leave it out with --corpora)")
            files.append(archive.source(member))
    for archive, a, b in _dev_test_choice(raw_dir, src, tgt).values():
        files += [archive.source(a), archive.source(b)]
    return sorted(set(files))


def extract(raw_dir, pair, names, work_dir, raw_out):
    """Training text to work_dir/corpus.{src,tgt} (all corpora, normalised, one after the
    other); dev and test sgm to raw_out/{valid,test}.{src,tgt}."""
    src, tgt, x = check_pair(pair)
    x_first = src == x
    counts = {}
    scratch = Path(work_dir) / "unpacked"
    with atomic_write(Path(work_dir) / f"corpus.{src}") as fs, \
            atomic_write(Path(work_dir) / f"corpus.{tgt}") as ft:
        for name, (url, fname, reader) in select(x, names).items():
            n = 0
            try:
                for s, t in read_corpus(raw_dir, fname, reader, x, x_first, scratch):
                    fs.write(normalise(s) + "\n")
                    ft.write(normalise(t) + "\n")
                    n += 1
            except READ_ERRORS as e:  # name the file, not just the Python error
                raise DataError(f"{Archive(raw_dir, fname).path} ({name}) cannot be read after "
                                f"{n} pairs ({type(e).__name__}: {e}); delete it and download it "
                                f"again") from None
            counts[name] = n
    for split, (archive, src_member, ref_member) in _dev_test_choice(raw_dir, src, tgt).items():
        try:
            s_lines, t_lines = read_sgm(archive, src_member), read_sgm(archive, ref_member)
        except READ_ERRORS as e:
            raise DataError(f"{archive.path} ({split} set) cannot be read ({type(e).__name__}: {e}); "
                            f"delete it and download it again") from None
        if len(s_lines) != len(t_lines) or not s_lines:
            raise DataError(f"{archive.path}: {src_member} has {len(s_lines)} segments, "
                            f"{ref_member} has {len(t_lines)}")
        write_pairs(zip(s_lines, t_lines), Path(raw_out) / f"{split}.{src}",
                    Path(raw_out) / f"{split}.{tgt}")
        counts[split] = len(s_lines)
    return counts
