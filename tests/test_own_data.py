"""Issue 26: the plugin on a user's own corpus. The README's "Use it on your data" commands
run as written (only the model shrunk and the run shortened), from raw text to a guide
split, a guided fairseq-train run, BLEU, the learned values and a checkpoint that stock
fairseq-generate loads; a corpus already binarized is split by index; bad input is refused
naming the file; the plot and table tools on plain fairseq-train runs."""
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from conftest import BIN, ENV, REPO, TINY_MODEL, json_logs, run, train_cmd, write_cipher_corpus

sys.path.insert(0, str(REPO))
from guided_recipes.datalib import guide_split  # noqa: E402
from guided_recipes.run import export  # noqa: E402

PAIRS = {"train": 2000, "valid": 100, "test": 100}
# appended to every fairseq-train of a README block: argparse keeps the last value given
SHRINK = [*TINY_MODEL, "--max-update", "8", "--log-interval", "1", "--seed", "1", "--num-workers", "0"]
PATH_ENV = dict(ENV, PATH=f"{BIN}:{ENV['PATH']}")


def readme_blocks(section: str) -> list:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", text[start:end], re.S)


def workspace(root: Path) -> Path:
    """What a user has: corpus/spm/SPLIT.{de,en} (sentencepiece-shaped pieces of the toy
    cipher corpus) and corpus/raw/test.en (the detokenized references), next to this
    repository's entry points, as the README's commands expect them."""
    cipher = root / "cipher"
    cipher.mkdir()
    write_cipher_corpus(cipher, PAIRS)
    (root / "corpus" / "spm").mkdir(parents=True)
    (root / "corpus" / "raw").mkdir()
    for split in PAIRS:
        for ext, lang in (("src", "de"), ("tgt", "en")):
            lines = (cipher / f"{split}.{ext}").read_text().splitlines()
            pieces = [" ".join("\u2581" + w for w in line.split()) for line in lines]
            (root / "corpus" / "spm" / f"{split}.{lang}").write_text("\n".join(pieces) + "\n")
    shutil.copy(cipher / "test.tgt", root / "corpus" / "raw" / "test.en")
    for name in ("scripts", "user_scripts", "fairseq_guided"):
        (root / name).symlink_to(REPO / name)
    (root / ".venv").symlink_to(BIN.parent)
    return root


def bash(script: str, cwd: Path):
    return subprocess.run(["bash", "-c", "set -eo pipefail\n" + script], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=PATH_ENV)


def sentences(prefix: Path, dict_file: Path) -> list:
    """The pieces of each sentence of a binary split, read back through fairseq."""
    from fairseq.data import Dictionary, indexed_dataset

    dictionary, data = Dictionary.load(str(dict_file)), indexed_dataset.MMapIndexedDataset(str(prefix))
    return [dictionary.string(data[i][:-1]) for i in range(len(data))]  # without the </s>


def hypotheses(path: Path) -> list:
    return sorted(line for line in path.read_text().splitlines() if line.startswith("H-"))


def test_the_readme_own_data_commands_run_as_written(tmp_path):
    work = workspace(tmp_path)
    blocks = readme_blocks("Use it on your data")
    from_bin = [b for b in blocks if "--from-bin" in b]
    assert len(from_bin) == 1 and len(blocks) == 7, blocks
    shrink = "fairseq-train() { command fairseq-train \"$@\" " + " ".join(SHRINK) + "; }\n"
    out = bash(shrink + "\n".join(b for b in blocks if b is not from_bin[0]), work)
    assert out.returncode == 0, out.stdout[-5000:]

    # the guide split: every 100th training pair, out of train, one dictionary for all
    data = work / "data-bin" / "de-en"
    record = json.loads((data / "guide_split.json").read_text())
    assert (record["pairs"], record["train"], record["guide"]) == (2000, 1980, 20)
    spm = (work / "corpus" / "spm" / "train.de").read_text().splitlines()
    assert sentences(data / "guide.de-en.de", data / "dict.de.txt") == spm[99::100]
    assert sentences(data / "train.de-en.de", data / "dict.de.txt") == [s for i, s in enumerate(spm) if (i + 1) % 100]
    assert {f.name.split(".")[0] for f in data.glob("*.bin")} == {"train", "valid", "test", "guide"}

    # the guided run learned beta1 at every update; the grep shows the last value
    log = (work / "checkpoints" / "guided" / "train.log").read_text()
    # (fairseq's --log-file handler is added again with each epoch's progress bar: from the
    # second epoch on every line is written twice, identically)
    beta1 = list(dict(re.findall(r"num_updates=(\d+),.*guided_beta1=([0-9.]+)", log)).items())
    assert [int(u) for u, _ in beta1] == list(range(1, 9)) and float(beta1[0][1]) == 0.9
    assert f"guided_beta1={beta1[-1][1]}\n" in out.stdout

    # every test sentence translated; the BLEU sacrebleu printed is that of these hypotheses
    hyps = (work / "hyp.en").read_text().splitlines()
    refs = (work / "corpus" / "raw" / "test.en").read_text().splitlines()
    assert len(hyps) == len(refs) == 100
    printed = float(re.search(r'"score": ([0-9.]+)', out.stdout).group(1))
    assert printed == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=0.05)

    # the plot tool drew the logged values, nothing else
    report = work / "checkpoints" / "guided" / "report"
    rows = [line.split(",") for line in (report / "curves.csv").read_text().splitlines()]
    assert [(int(u), float(v)) for fig, _, u, v in rows[1:] if fig == "beta1.png"] == [
        (int(u), float(v)) for u, v in beta1]
    assert (report / "beta1.png").read_bytes()[:4] == b"\x89PNG"
    # TensorBoard's own reader finds the learned value at each of the 8 updates
    assert "Event statistics for tag guided_beta1" in out.stdout and re.search(r"num_steps\s+8\n", out.stdout)

    # shared: stock fairseq-generate on the export gives the plugin's hypotheses, while on
    # the original checkpoint it stops at torch's weights_only loading
    assert hypotheses(work / "gen.stock.out") == hypotheses(work / "gen.out")
    assert len(hypotheses(work / "gen.out")) == 100
    stock = bash("fairseq-generate data-bin/de-en --path checkpoints/guided/checkpoint_best.pt "
                 "--gen-subset test", work)
    assert stock.returncode != 0 and "argparse.Namespace" in stock.stdout
    interactive = bash("head -n 3 corpus/spm/test.de | fairseq-interactive data-bin/de-en --path model.pt "
                       "--source-lang de --target-lang en --beam 4 --max-len-a 1.2 --max-len-b 10", work)
    assert interactive.returncode == 0, interactive.stdout[-3000:]
    assert len(re.findall(r"^H-\d\t", interactive.stdout, re.M)) == 3
    import torch

    state = torch.load(work / "model.pt", map_location="cpu", weights_only=True)
    assert state["cfg"]["task"]["_name"] == "translation" and "last_optimizer_state" not in state
    assert not any(k.startswith("guidance") for k in state["cfg"]["task"]) and state["cfg"]["optimizer"] is None


def test_a_binarized_corpus_is_split_by_index_and_trains(tmp_path):
    """The README's --from-bin command on what fairseq-preprocess made: the original folder
    untouched, train and guide by index, everything else copied; a guided run (alpha, json
    log) trains on it; the plot tool reads that plain run's console log; fairseq's valid1
    name works only as the README says."""
    work = workspace(tmp_path)
    original = work / "data-bin" / "de-en"
    done = run([BIN / "fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref",
                work / "corpus/spm/train", "--validpref", work / "corpus/spm/valid", "--testpref",
                work / "corpus/spm/test", "--destdir", original, "--joined-dictionary", "--workers", "1"])
    assert done.returncode == 0, done.stdout[-2000:]
    digest = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in original.iterdir()}
    [block] = [b for b in readme_blocks("Use it on your data") if "--from-bin" in b]
    out = bash(block, work)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "train 1980 pairs, guide 20 (every 100th of 2000)" in out.stdout
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in original.iterdir()} == digest
    split = work / "data-bin" / "de-en-guided"
    for lang in ("de", "en"):
        whole = sentences(original / f"train.de-en.{lang}", original / f"dict.{lang}.txt")
        assert sentences(split / f"guide.de-en.{lang}", split / f"dict.{lang}.txt") == whole[99::100]
        assert sentences(split / f"train.de-en.{lang}", split / f"dict.{lang}.txt") == [
            s for i, s in enumerate(whole) if (i + 1) % 100]
    for name, sha in digest.items():
        if not name.startswith("train."):
            assert hashlib.sha256((split / name).read_bytes()).hexdigest() == sha, name

    trained = run(train_cmd(split, tmp_path / "ckpt", "--optimizer", "guided_adam", "--guided-hparams", "alpha",
                            "--lr", "0.003", "--max-update", "3"))
    assert trained.returncode == 0, trained.stdout[-3000:]
    assert "guide de-en 20 examples" in trained.stdout
    rows = json_logs(trained.stdout)
    assert [int(r["num_updates"]) for r in rows] == [1, 2, 3] and all("guided_alpha" in r for r in rows)

    # plot_schedules on that plain run: its console output saved as a .log, no run.json
    (tmp_path / "runs" / "alpha").mkdir(parents=True)
    (tmp_path / "runs" / "alpha" / "console.log").write_text(trained.stdout)
    plotted = run([sys.executable, REPO / "user_scripts" / "plot_schedules.py", tmp_path / "runs"])
    assert plotted.returncode == 0, plotted.stdout[-2000:]
    csv = [line.split(",") for line in (tmp_path / "runs" / "report" / "curves.csv").read_text().splitlines()]
    assert [(fig, label, int(u), float(v)) for fig, label, u, v in csv[1:] if fig == "alpha.png"] == [
        ("alpha.png", "alpha", int(r["num_updates"]), float(r["guided_alpha"])) for r in rows]
    valid = json_logs(trained.stdout, "valid")
    assert [(int(u), float(v)) for fig, _, u, v in csv[1:] if fig == "valid_loss.png"] == [
        (int(r["valid_num_updates"]), float(r["valid_loss"])) for r in valid] and valid
    empty = run([sys.executable, REPO / "user_scripts" / "plot_schedules.py", tmp_path / "ckpt"])
    assert empty.returncode != 0 and "no fairseq log in" in empty.stdout
    table = run([sys.executable, REPO / "user_scripts" / "compare_table.py", tmp_path / "runs"])
    assert table.returncode != 0 and "no run.json in" in table.stdout

    # fairseq-preprocess --validpref valid,guide names the guide split valid1
    valid1 = tmp_path / "valid1"
    shutil.copytree(split, valid1)
    for f in valid1.glob("guide.*"):
        f.rename(f.with_name("valid1" + f.name[len("guide"):]))
    flags = ["--optimizer", "guided_adam", "--guided-hparams", "alpha", "--lr", "0.003", "--max-update", "2",
             "--guidance-subset", "valid1"]
    refused = run(train_cmd(valid1, tmp_path / "v1a", *flags))
    assert refused.returncode != 0 and "will be ignored" in refused.stdout
    accepted = run(train_cmd(valid1, tmp_path / "v1b", *flags, "--ignore-unused-valid-subsets"))
    assert accepted.returncode == 0 and "valid1 de-en 20 examples" in accepted.stdout, accepted.stdout[-3000:]


def test_bad_input_is_refused_naming_the_file(tiny_corpus, tmp_path, capsys):
    def refused(*argv):
        assert guide_split.main([str(a) for a in argv]) == 2
        return capsys.readouterr().err

    (tmp_path / "a.de").write_text("x\ny\nz\n")
    (tmp_path / "a.en").write_text("x\ny\n")
    raw = ("-s", "de", "-t", "en", "--destdir", tmp_path / "out")
    assert f"{tmp_path}/a.de has 3 lines but {tmp_path}/a.en has 2" in refused("--trainpref", tmp_path / "a", *raw)
    (tmp_path / "a.en").write_text("x\ny\nz\n")
    assert f"{tmp_path}/a.de has 3 pairs: every 100th gives an empty guide split" in refused(
        "--trainpref", tmp_path / "a", *raw)
    err = refused("--trainpref", tmp_path / "a", "--validpref", tmp_path / "b", *raw)
    assert f"missing {tmp_path}/b.de" in err
    assert "--only-source is not supported" in refused("--trainpref", tmp_path / "a", *raw, "--only-source")

    assert f"{tiny_corpus} already has a guide split ({tiny_corpus}/guide.src-tgt.src.bin)" in refused(
        "--from-bin", tiny_corpus, "--destdir", tmp_path / "new")
    corpus = tmp_path / "bin"
    shutil.copytree(tiny_corpus, corpus, ignore=shutil.ignore_patterns("guide.*"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert f"--destdir {tmp_path}/full is not empty: refusing to overwrite" in refused(
        "--from-bin", corpus, "--destdir", tmp_path / "full")
    entries = (corpus / "dict.src.txt").read_text().splitlines()
    (corpus / "dict.src.txt").write_text("\n".join(entries[:10]) + "\n")
    err = refused("--from-bin", corpus, "--destdir", tmp_path / "new")
    assert f"{corpus}/train.src-tgt.src.bin holds token id" in err and f"{corpus}/dict.src.txt has 14 entries" in err
    assert not (tmp_path / "new").exists()  # nothing half-written
    for ext in ("bin", "idx"):
        shutil.copy(corpus / f"valid.src-tgt.src.{ext}", corpus / f"train.src-tgt.src.{ext}")
    err = refused("--from-bin", corpus, "--destdir", tmp_path / "new")
    assert f"{corpus}/train.src-tgt.src.idx holds 100 sentences but {corpus}/train.src-tgt.tgt.idx holds 2000" in err

    assert export.main([str(tmp_path / "none.pt"), str(tmp_path / "out.pt")]) == 2
    assert f"no checkpoint {tmp_path}/none.pt" in capsys.readouterr().err
    assert export.main([str(tmp_path / "none.pt"), str(tmp_path / "a.de")]) == 2
    assert f"{tmp_path}/a.de exists: refusing to overwrite" in capsys.readouterr().err


def test_a_checkpoint_of_the_hydra_route_exports_too(tiny_corpus, tmp_path):
    """The presets' route (fairseq-hydra-train, guided LAMB, the model config saved as a
    nested dict rather than a Namespace): the export loads in stock fairseq-generate, with
    the plugin's hypotheses."""
    overrides = [f"task.data={tiny_corpus}", f"common.user_dir={REPO / 'fairseq_guided'}", "task.source_lang=src",
                 "task.target_lang=tgt", "model.encoder.layers=1", "model.decoder.layers=1",
                 "model.encoder.embed_dim=32", "model.decoder.embed_dim=32", "model.encoder.ffn_embed_dim=64",
                 "model.decoder.ffn_embed_dim=64", "dataset.max_tokens=1000", "task.guidance_max_tokens=500",
                 "optimization.max_update=3", f"checkpoint.save_dir={tmp_path}", "common.cpu=true",
                 f"hydra.run.dir={tmp_path}", "optimizer.guided_hparams=alpha\\,beta1"]
    trained = run([BIN / "fairseq-hydra-train", "--config-dir", REPO / "configs" / "nmt", "--config-name", "cpu",
                   *overrides])
    assert trained.returncode == 0, trained.stdout[-3000:]
    exported = run([sys.executable, REPO / "scripts" / "export_checkpoint.py", tmp_path / "checkpoint_last.pt",
                    tmp_path / "model.pt"])
    assert exported.returncode == 0, exported.stdout[-2000:]
    generate = [BIN / "fairseq-generate", tiny_corpus, "--gen-subset", "test", "--beam", "2", "--batch-size", "50",
                "--required-batch-size-multiple", "1", "--max-len-a", "1.2", "--max-len-b", "10"]
    stock = run([*generate, "--path", tmp_path / "model.pt"])
    plugin = run([*generate, "--path", tmp_path / "checkpoint_last.pt", "--user-dir", REPO / "fairseq_guided"])
    assert stock.returncode == 0 and plugin.returncode == 0, stock.stdout[-3000:]
    (tmp_path / "stock.out").write_text(stock.stdout)
    (tmp_path / "plugin.out").write_text(plugin.stdout)
    assert hypotheses(tmp_path / "stock.out") == hypotheses(tmp_path / "plugin.out")
    assert len(hypotheses(tmp_path / "stock.out")) == 100
