"""The tiny corpus's opt-in cache (the mutation pass's): what it returns is byte for byte a
fresh build, and a second session reuses it instead of building again."""
from conftest import build_tiny_corpus, cached_tiny_corpus


def files_of(folder):
    """Every file's bytes but fairseq-preprocess's log (it names its folders)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "preprocess.log"}


def test_the_cached_corpus_is_a_fresh_build_and_is_reused(tmp_path):
    (tmp_path / "fresh").mkdir()
    fresh = build_tiny_corpus(tmp_path / "fresh")
    cached = cached_tiny_corpus(tmp_path / "cache")
    assert files_of(cached.parent) == files_of(fresh.parent)
    assert len(files_of(cached.parent)) > 20  # raw and binarized splits, dictionaries
    stamp = (cached / "dict.src.txt").stat().st_mtime_ns
    again = cached_tiny_corpus(tmp_path / "cache")
    assert again == cached and (again / "dict.src.txt").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.parent.name]  # no staging left
