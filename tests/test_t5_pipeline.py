"""T5 pipeline end to end on CPU: scripts/prepare_monolingual.sh on real English text
(Python's own documentation), the span-corruption dataset through fairseq's data stack,
the t5_small/t5_tiny sizes, bad task flags, and scripts/t5_recipe.py: guided pretraining
(alpha and beta1 move), fine-tuning from the checkpoint, greedy decoding, accuracy."""
import argparse
import inspect
import json
import re

import numpy as np
import pytest

import fairseq_guided  # noqa: F401 (registers the task and architectures)
from fairseq.data import Dictionary
from fairseq.models.transformer import TransformerModel
from fairseq.models import ARCH_CONFIG_REGISTRY
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from fairseq_guided.data import span_corruption
from fairseq_guided.tasks.guided_span_corruption import GuidedSpanCorruptionConfig, GuidedSpanCorruptionTask

from conftest import BIN, PLUGIN, REPO, json_logs, run

DOC_MODULES = ["argparse", "collections", "contextlib", "csv", "dataclasses", "decimal", "difflib",
               "functools", "heapq", "inspect", "json", "logging", "pathlib", "pickle", "random",
               "shutil", "subprocess", "tarfile", "textwrap", "threading", "typing", "zipfile"]

# (mean score, snippet): short review sentences written for this test, sign = label
REVIEWS = [(2.5, "A gorgeous, witty and moving film."), (-2.1, "A dull, lifeless mess of a movie."),
           (1.8, "The performances are wonderful and the story is touching."),
           (-1.9, "The plot is boring and the acting is terrible."),
           (2.2, "One of the funniest comedies of the year."), (-2.4, "An ugly, tedious waste of time."),
           (1.6, "Smart, warm and beautifully shot."), (-1.5, "Too long, too loud and too stupid."),
           (2.0, "A delightful surprise from start to finish."), (-2.0, "I hated every minute of it."),
           (1.7, "Charming actors and a clever script."), (-1.8, "A clumsy script sinks a weak cast."),
           (2.3, "Thrilling, fresh and full of heart."), (-2.2, "Painfully slow and utterly forgettable."),
           (1.4, "A solid, enjoyable adventure."), (-1.3, "Flat jokes and a predictable ending."),
           (1.9, "The best animated film in years."), (-2.6, "The worst sequel imaginable."),
           (1.2, "Pleasant and good natured."), (-1.1, "Bland and forgettable."),
           (2.1, "Brilliant direction and a great score."), (-1.7, "A confused and irritating story."),
           (1.5, "Funny, sweet and well acted."), (-1.6, "Cheap effects and wooden acting."),
           (2.4, "A masterpiece of quiet beauty."), (-2.3, "An insult to the audience."),
           (1.3, "Good fun for the whole family."), (-1.4, "Messy, noisy and pointless."),
           (1.1, "A likable, modest comedy."), (-1.2, "Dreary and badly paced."),
           (0.0, "A film about a family."), (1.0, "Nice to look at, and often moving.")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mono")
    texts = root / "texts"
    texts.mkdir()
    for name in DOC_MODULES:
        module = __import__(name)
        docs = [inspect.getdoc(module) or ""]
        docs += [inspect.getdoc(obj) or "" for attr, obj in sorted(vars(module).items())
                 if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))]
        (texts / f"{name}.txt").write_text("\n\n".join(d for d in docs if d))
    reviews = root / "reviews.txt"
    reviews.write_text("".join(f"{i}\t{score}\t{text}\r\n" for i, (score, text) in enumerate(REVIEWS)))
    cmd = ["bash", REPO / "scripts" / "prepare_monolingual.sh", "--source", "textdir", "--text-dir", texts,
           "--dest", root / "data", "--vocab-size", 1000, "--sentinels", 40, "--guide-every", 20,
           "--valid-every", 20, "--sentiment", reviews, "--sentiment-test", 8, "--sentiment-valid", 4,
           "--workers", 1]
    first = run(cmd)
    assert first.returncode == 0, first.stdout[-3000:]
    second = run(cmd)  # idempotent: every stage skips itself
    assert second.returncode == 0 and second.stdout.count("skip ") == 5, second.stdout
    return root / "data", first.stdout


def test_prepared_splits_and_dictionary(prepared):
    data, log = prepared
    print(log)
    lines = {s: (data / "raw" / f"{s}.txt").read_text().splitlines() for s in ("train", "valid", "guide")}
    assert len(lines["guide"]) > 20 and len(lines["valid"]) > 20
    assert not set(lines["guide"]) & set(lines["train"]) and not set(lines["valid"]) & set(lines["train"])
    dictionary = Dictionary.load(str(data / "bin" / "dict.txt"))
    sentinels = [dictionary.index(f"<extra_id_{k}>") for k in range(40)]
    assert dictionary.unk() not in sentinels and len(set(sentinels)) == 40
    labels = (data / "sentiment" / "raw" / "test.tgt").read_text().split()
    assert len(labels) == 8 and set(labels) <= {"positive", "negative"}  # the 0.0 row is dropped


def load_task(data, split, inputs_length=64):
    cfg = GuidedSpanCorruptionConfig(data=str(data / "bin"), inputs_length=inputs_length, seed=1,
                                     dataset_impl=None, train_max_tokens=2048, train_batch_size=None)
    task = GuidedSpanCorruptionTask.setup_task(cfg)
    task.load_dataset(split)
    return task, task.dataset(split)


def test_dataset_reconstructs_real_text_and_is_deterministic(prepared):
    data, _ = prepared
    task, dataset = load_task(data, "train")
    blocks, eos = dataset.blocks, task.dictionary.eos()
    assert task.block_length == span_corruption.raw_length_for_inputs(64, 0.15, 3.0)
    noise = total = 0
    for index in range(len(dataset)):
        item = dataset[index]
        source, target = item["source"].numpy(), item["target"].numpy()
        assert source[-1] == eos and target[-1] == eos
        assert (len(source), len(target)) == dataset.size(index)
        assert len(source) <= 64
        np.testing.assert_array_equal(span_corruption.merge(source[:-1], target[:-1], task.sentinel_ids),
                                      blocks[index].numpy())
        noise += (~np.isin(target[:-1], task.sentinel_ids)).sum()
        total += len(blocks[index])
    assert abs(noise / total - 0.15) < 0.01, noise / total
    first = dataset[3]["source"]
    assert (dataset[3]["source"] == first).all()  # a function of (seed, epoch, index)
    dataset.set_epoch(2)
    assert not (dataset[3]["source"] == first).all()  # new noise each epoch
    _, guide = load_task(data, "guide")
    guide_first = guide[0]["source"]
    guide.set_epoch(2)
    assert (guide[0]["source"] == guide_first).all()  # held-out splits keep their noise
    batch = dataset.collater([dataset[i] for i in range(4)])
    assert batch["net_input"]["prev_output_tokens"][:, 0].eq(eos).all()
    print(f"{len(dataset)} training blocks of {task.block_length} tokens reconstruct exactly")


def test_model_sizes():
    for arch, vocab, low, high in (("t5_small", 32128, 55e6, 65e6), ("t5_tiny", 8000, 1e6, 3e6)):
        dictionary = Dictionary()
        for k in range(vocab - len(dictionary)):
            dictionary.add_symbol(f"w{k}")
        args = argparse.Namespace()
        ARCH_CONFIG_REGISTRY[arch](args)
        model = TransformerModel.build_model(args, TranslationTask(TranslationConfig(), dictionary, dictionary))
        count = sum(p.numel() for p in model.parameters())
        print(f"{arch}: {count:,} parameters with a {len(dictionary)}-entry vocabulary "
              f"({args.encoder_layers}+{args.decoder_layers} layers, width {args.encoder_embed_dim})")
        assert low < count < high
        assert model.encoder.embed_tokens.weight is model.decoder.output_projection.weight  # shared
        assert args.encoder_normalize_before and args.decoder_normalize_before  # pre-norm


@pytest.mark.parametrize("flags,message", [
    (["--noise-density", "0"], "--noise-density must be in (0, 1)"),
    (["--noise-density", "0.9"], "--noise-density / --mean-noise-span-length"),
    (["--mean-noise-span-length", "0.5"], "--mean-noise-span-length must be >= 1"),
    (["--inputs-length", "1000"], "sentinels"),
], ids=["density0", "density0.9", "span0.5", "too-few-sentinels"])
def test_bad_task_flags_fail_before_training(prepared, tmp_path, flags, message):
    data, _ = prepared
    out = run([BIN / "fairseq-train", data / "bin", "--user-dir", PLUGIN, "--task", "guided_span_corruption",
               "--arch", "t5_tiny", "--optimizer", "guided_adafactor", "--lr", "0.01", "--max-tokens", "2048",
               "--save-dir", tmp_path, "--max-update", "1", *flags])
    assert out.returncode != 0 and message in out.stdout, out.stdout[-2000:]


def test_recipe_pretrains_guided_then_finetunes_and_scores(prepared, tmp_path):
    data, _ = prepared
    out = run([BIN / "python", REPO / "scripts" / "t5_recipe.py", "--data", data / "bin", "--out", tmp_path,
               "--pretrain-updates", 20, "--validate-every", 10, "--finetune-updates", 8,
               "--max-tokens", 2048])
    assert out.returncode == 0, out.stdout[-3000:]
    print(out.stdout)
    results = json.loads((tmp_path / "results.json").read_text())
    by_variant = {r["variant"]: r for r in results["runs"]}
    assert set(by_variant) == {"baseline", "guided"}
    rows = json_logs((tmp_path / "guided-seed1" / "pretrain.log").read_text())
    alphas = [float(r["guided_alpha"]) for r in rows]
    betas = [float(r["guided_beta1"]) for r in rows]
    assert len(rows) == 2 and all(np.isfinite(alphas + betas))
    assert abs(alphas[0] - 1.0) > 1e-3 and alphas[1] != alphas[0], alphas
    assert abs(betas[0] - 0.9) > 1e-4 and betas[1] != betas[0], betas
    assert "guided_alpha" not in by_variant["baseline"]["final_learned"]
    for run_ in results["runs"]:
        updates = [u for u, _ in run_["valid_curve"]]  # every 10 updates, and at epoch ends
        assert 10 in updates and updates[-1] == 20, updates
        assert all(np.isfinite(loss) and loss > 0 for _, loss in run_["valid_curve"])
        assert 0.0 <= run_["test_accuracy"] <= 1.0 and run_["test_size"] == 8
        assert re.search(rf"test accuracy {run_['test_accuracy']:.4f} on 8 snippets", out.stdout)
    assert (tmp_path / "valid_curves.png").stat().st_size > 0
