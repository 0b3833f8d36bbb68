"""Issue 15, case 7: damaged or differently packed raw files. Each damaged file ends in one
error line naming it, before any work and with no .tmp left behind; gunzipped single files
and archives one folder down are accepted; a truncated .deb is detected."""
import gzip
import shutil
import subprocess

import pytest

from test_data_pipeline import REPO, SKIP_MD5, one_error_line, run, wmt_raw  # noqa: F401 (fixture)

REPO_SCRIPTS = REPO / "scripts" / "datalib_common.sh"
BASE = ["--pair", "de-en", "--corpora", "europarl_v9,commoncrawl,paracrawl_v3,rapid_2019",
        "--vocab-size", "100"]


@pytest.fixture
def raw(wmt_raw, tmp_path):
    """A private copy of the sample raw files, to damage."""
    copy = tmp_path / "raw"
    shutil.copytree(wmt_raw[0], copy)
    return copy


def prepare(raw, dest, *extra, ok=False):
    return run("prepare_wmt19.sh", *BASE, "--raw-dir", raw, "--dest", dest, *SKIP_MD5, *extra, ok=ok)


def no_partial_outputs(dest):
    assert not list(dest.rglob("*.tmp")) and not list(dest.rglob("unpacked/*")), list(dest.rglob("*"))


@pytest.mark.parametrize("damage,words", [
    ("html-as-test.tgz", ["test.tgz is not a .tgz archive", "<!DOCTYPE html"]),
    ("truncated-tgz", ["training-parallel-commoncrawl.tgz is damaged or truncated"]),
    ("bad-gzip", ["europarl-v9.de-en.tsv.gz is damaged or truncated"]),
    ("truncated-zip", ["rapid2019.de-en.zip is damaged or truncated"]),
    ("zip-crc", ["rapid2019.de-en.zip: member", "fails its CRC check"]),
    ("truncated-tmx", ["en-de.bicleaner07.tmx.gz (paracrawl_v3) cannot be read", "ParseError"]),
])
def test_damaged_archive_is_named(raw, tmp_path, damage, words):
    def cut(name, keep):
        data = (raw / name).read_bytes()
        (raw / name).write_bytes(data[:keep(len(data))])

    if damage == "html-as-test.tgz":
        (raw / "test.tgz").write_text("<!DOCTYPE html><html><body>Not Found</body></html>\n")
    elif damage == "truncated-tgz":
        cut("training-parallel-commoncrawl.tgz", lambda n: n // 2)
    elif damage == "bad-gzip":
        data = bytearray((raw / "europarl-v9.de-en.tsv.gz").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (raw / "europarl-v9.de-en.tsv.gz").write_bytes(bytes(data))
    elif damage == "truncated-zip":
        cut("rapid2019.de-en.zip", lambda n: n - 30)  # no central directory any more
    elif damage == "zip-crc":
        data = bytearray((raw / "rapid2019.de-en.zip").read_bytes())
        data[60] ^= 0x01  # inside the first member's stored text
        (raw / "rapid2019.de-en.zip").write_bytes(bytes(data))
    else:  # a whole gzip of a TMX cut off mid-file: the archive is fine, the XML is not
        text = gzip.decompress((raw / "en-de.bicleaner07.tmx.gz").read_bytes())
        (raw / "en-de.bicleaner07.tmx.gz").write_bytes(gzip.compress(text[: len(text) // 2]))
    dest = tmp_path / "out"
    one_error_line(prepare(raw, dest), *words)
    no_partial_outputs(dest)


def test_raw_dir_is_checked_against_the_published_md5(raw, tmp_path):
    done = run("prepare_wmt19.sh", *BASE, "--raw-dir", raw, "--dest", tmp_path / "out", ok=False)
    one_error_line(done, "dev.tgz: md5", "is not the published", "--skip-checksum dev.tgz")


def test_gunzipped_file_and_archives_one_folder_down_are_accepted(raw, tmp_path):
    tsv = raw / "europarl-v9.de-en.tsv.gz"
    (raw / "europarl-v9.de-en.tsv").write_bytes(gzip.decompress(tsv.read_bytes()))
    tsv.unlink()
    (raw / "wmt19").mkdir()
    (raw / "dev.tgz").rename(raw / "wmt19" / "dev.tgz")  # downloads kept in a folder
    subprocess.run(["tar", "-xzf", str(raw / "test.tgz"), "-C", str(raw / "wmt19")], check=True)
    (raw / "test.tgz").unlink()  # unpacked: raw/wmt19/sgm/newstest2019-*.sgm
    done = prepare(raw, tmp_path / "out", "--corpora", "europarl_v9", ok=True)
    assert "europarl_v9 " in done.stdout and "test 30" in done.stdout, done.stdout


def test_guide_every_1_is_refused_before_sentencepiece(raw, tmp_path):
    done = prepare(raw, tmp_path / "out", "--corpora", "europarl_v9", "--guide-every", "1")
    one_error_line(done, "--guide-every 1 puts every pair in guide")


def test_truncated_deb_is_not_trusted(tmp_path):
    if not shutil.which("dpkg-deb"):
        pytest.skip("no dpkg-deb")
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text("Package: probe\nVersion: 1\nArchitecture: all\n"
                                            "Maintainer: t <t@t>\nDescription: probe\n")
    (pkg / "usr").mkdir()
    (pkg / "usr" / "data").write_bytes(bytes(range(256)) * 400)
    subprocess.run(["dpkg-deb", "-Znone", "--build", str(pkg), str(tmp_path / "probe.deb")],
                   check=True, capture_output=True)
    data = (tmp_path / "probe.deb").read_bytes()
    (tmp_path / "cut.deb").write_bytes(data[: len(data) * 2 // 3])

    def intact(name):
        return subprocess.run(["bash", "-c", f'prog=t; source {REPO_SCRIPTS}; deb_intact "$1"', "_",
                               str(tmp_path / name)]).returncode == 0

    assert intact("probe.deb") and not intact("cut.deb")


def test_guide_every_1_is_refused_for_monolingual_text(tmp_path):
    from guided_recipes.datalib import monolingual

    (tmp_path / "lines.tsv").write_text("".join(f"{i}\tline {i}\n" for i in range(50)))
    with pytest.raises(SystemExit, match="--guide-every 1 puts every line in guide"):
        monolingual.split(tmp_path / "lines.tsv", tmp_path, guide_every=1, valid_every=10)
    assert not (tmp_path / "train.txt").exists()
