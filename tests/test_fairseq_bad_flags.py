"""Bad flags stop fairseq-train before the first update, with a message that names the
flag and what it allows."""
import shutil

import pytest

from conftest import BIN, run, train_cmd

CASES = {
    "unknown-name": (["--optimizer", "guided_adam", "--guided-hparams", "alpha,gamma"],
                     ["--guided-hparams", "'gamma'", "allowed: alpha, beta1, beta2, eps, weight_decay"]),
    "substring-name": (["--optimizer", "guided_lamb", "--guided-hparams", "beta"],
                       ["--guided-hparams", "'beta'"]),
    "adafactor-beta2": (["--optimizer", "guided_adafactor", "--beta1", "0.9", "--guided-hparams", "beta2"],
                        ["--guided-hparams", "allowed: alpha, beta1, weight_decay"]),
    "beta1-init-out-of-range": (["--optimizer", "guided_adam", "--adam-betas", "(1.0, 0.999)",
                                 "--guided-hparams", "beta1"], ["--adam-betas", "[0, 1)"]),
    "beta1-init-zero": (["--optimizer", "guided_lamb", "--lamb-betas", "(0.0, 0.999)",
                         "--guided-hparams", "beta1"], ["beta1", "in (0, 0.99999)"]),
    "adafactor-beta1-without-init": (["--optimizer", "guided_adafactor", "--guided-hparams", "beta1"],
                                     ["--guided-hparams", "--beta1"]),
    "negative-meta-lr": (["--optimizer", "guided_adam", "--guided-hparams", "alpha",
                          "--guided-meta-lr=-1e-3"], ["--guided-meta-lr", ">= 0"]),
    "bad-steepness": (["--optimizer", "guided_adam", "--guided-hparams", "alpha",
                       "--guided-steepness", "alpha=0"], ["--guided-steepness", "> 0"]),
    "alpha-init": (["--optimizer", "guided_adam", "--guided-hparams", "alpha",
                    "--guided-alpha-init", "0"], ["--guided-alpha-init", "> 0"]),
    "interval": (["--optimizer", "guided_adam", "--guidance-interval", "0"],
                 ["--guidance-interval", ">= 1"]),
    "refresh-choice": (["--optimizer", "guided_adam", "--guidance-refresh", "sometimes"],
                       ["--guidance-refresh", "never", "step", "epoch"]),
    "stock-optimizer": (["--optimizer", "adam"], ["--optimizer", "guided_adam"]),
    # issue 15, case 4: each of these used to run to exit 0 learning nothing
    "learned-under-plain-task": (["--optimizer", "guided_adam", "--guided-hparams", "alpha",
                                  "--task", "translation"],
                                 ["--guided-hparams 'alpha' with --task translation", "learn nothing"]),
    "hparams-only-a-comma": (["--optimizer", "guided_adam", "--guided-hparams", ","],
                             ["--guided-hparams", "an empty name in ','"]),
    "steepness-of-unlearned": (["--optimizer", "guided_adam", "--guided-hparams", "alpha",
                                "--guided-steepness", "beta1=2"],
                               ["--guided-steepness: beta1 is not learned"]),
    # issue 25, item 2: each of these ran to exit 0 with the flag doing nothing
    "alpha-init-with-alpha-not-learned": (["--optimizer", "guided_adam", "--guided-hparams", "beta1",
                                           "--guided-alpha-init", "0.01"],
                                          ["--guided-alpha-init 0.01 has no effect: alpha is not learned"]),
    "alpha-init-learning-nothing": (["--optimizer", "guided_adam", "--guided-alpha-init", "0.01"],
                                    ["--guided-alpha-init 0.01 has no effect: alpha is not learned"]),
    "hparams-only-whitespace": (["--optimizer", "guided_adam", "--guided-hparams", " "],
                                ["--guided-hparams (for guided_adam): ' ' is only whitespace"]),
    # issue 15, case 5: fairseq's batching assertion one update in, before
    "guidance-max-tokens-below-every-example": (
        ["--optimizer", "guided_adam", "--guided-hparams", "alpha", "--guidance-max-tokens", "2"],
        ["--guidance-max-tokens 2 is smaller than the longest example of --guidance-subset 'guide'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_flag_stops_before_training(tiny_corpus, tmp_path, case):
    flags, expected = CASES[case]
    out = run(train_cmd(tiny_corpus, tmp_path / "ckpt", "--lr", "0.001", "--max-update", "5", *flags))
    assert out.returncode != 0, out.stdout[-2000:]
    assert "num_updates" not in out.stdout  # no update was made
    for text in expected:
        assert text in out.stdout, (text, out.stdout[-2000:])


def test_missing_guidance_split_is_named(tiny_corpus, tmp_path):
    data = tmp_path / "bin"
    shutil.copytree(tiny_corpus, data)
    for f in data.glob("guide.*"):
        f.unlink()
    out = run(train_cmd(data, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.001",
                        "--guided-hparams", "alpha", "--max-update", "5"))
    assert out.returncode != 0
    assert "--guidance-subset: no split 'guide'" in out.stdout, out.stdout[-2000:]
    # the train-batch mode needs no guide split
    out = run(train_cmd(data, tmp_path / "ckpt2", "--optimizer", "guided_adam", "--lr", "0.001",
                        "--guided-hparams", "alpha", "--max-update", "2", "--guidance-source", "train"))
    assert out.returncode == 0, out.stdout[-2000:]


def test_empty_guide_bin_is_named(tiny_corpus, tmp_path):
    data = tmp_path / "bin"
    shutil.copytree(tiny_corpus, data)
    (data / "guide.src-tgt.src.bin").write_bytes(b"")
    out = run(train_cmd(data, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.001",
                        "--guided-hparams", "alpha", "--max-update", "5"))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert f"{data / 'guide.src-tgt.src.bin'} is empty (0 bytes)" in out.stdout, out.stdout[-2000:]


GUIDE_BIN = "guide.src-tgt.tgt.bin"


@pytest.mark.parametrize("cut", ["half", "30-bytes"])
def test_truncated_guide_bin_is_named(tiny_corpus, tmp_path, cut):
    """Issue 25, item 4: a cut copy of the guide split used to load, and failed only when a
    guidance batch first drew one of the missing sentences."""
    data = tmp_path / "bin"
    shutil.copytree(tiny_corpus, data)
    whole = (data / GUIDE_BIN).read_bytes()
    keep = len(whole) // 2 if cut == "half" else len(whole) - 30
    (data / GUIDE_BIN).write_bytes(whole[:keep])
    out = run(train_cmd(data, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.001",
                        "--guided-hparams", "alpha", "--max-update", "5"))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert (f"{data / GUIDE_BIN} has {keep} bytes, but its index {data / 'guide.src-tgt.tgt.idx'} "
            f"describes 100 sentences in {len(whole)} bytes") in out.stdout, out.stdout[-2000:]


def test_guide_binarized_with_another_dictionary_is_named(tiny_corpus, tmp_path):
    """Issue 25, item 4: token ids past the dictionary used to fail at the first meta step,
    in the embedding lookup, naming no file."""
    words = (tiny_corpus / "dict.src.txt").read_text()
    bigger = tmp_path / "dict.bigger.txt"  # 50 more types, ranked first: every id shifts by 50
    bigger.write_text("".join(f"extra{i} 1000000\n" for i in range(50)) + words)
    other = tmp_path / "other"
    done = run([BIN / "fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
                "--validpref", tiny_corpus.parent / "guide", "--srcdict", bigger, "--tgtdict", bigger,
                "--destdir", other, "--workers", "1"])
    assert done.returncode == 0, done.stdout[-2000:]
    data = tmp_path / "bin"
    shutil.copytree(tiny_corpus, data)
    for f in other.glob("valid.*"):
        shutil.copy(f, data / f.name.replace("valid", "guide", 1))
    out = run(train_cmd(data, tmp_path / "ckpt", "--optimizer", "guided_adam", "--lr", "0.001",
                        "--guided-hparams", "alpha", "--max-update", "5"))
    assert out.returncode != 0 and "num_updates" not in out.stdout
    assert f"{data / 'guide.src-tgt.src.bin'} holds token id " in out.stdout, out.stdout[-2000:]
    assert f"but the dictionary ({data / 'dict.src.txt'}) has " in out.stdout
