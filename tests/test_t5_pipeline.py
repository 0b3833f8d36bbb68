"""T5 pipeline end to end on CPU: scripts/prepare_monolingual.sh on real English text
(Python's own documentation), the span-corruption dataset through fairseq's data stack,
the t5_small/t5_tiny sizes and T5's embedding parameterisation, bad task flags, the
recipe's commands (T5's Adafactor), and scripts/t5_recipe.py: momentum-free baseline and
guided pretraining (alpha and beta1 move), fine-tuning from each checkpoint and from
scratch, greedy decoding, accuracies with 95% intervals and the majority-class control."""
import argparse
import inspect
import json
import math
import re
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

import fairseq_guided  # noqa: F401 (registers the task and architectures)
from fairseq.data import Dictionary
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from fairseq_guided.data import span_corruption
from fairseq_guided.tasks.guided_span_corruption import GuidedSpanCorruptionConfig, GuidedSpanCorruptionTask
from guided_recipes.run import t5 as recipe
from guided_recipes.datalib.monolingual import vocab_pieces
from guided_recipes.report.t5_report import Z95

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
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=str(data / "spm.model")).get_piece_size()
    assert vocab_pieces(data / "bin") == pieces  # what --vocab-size and the recipe's check count
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


def test_model_sizes_and_t5_parameterisation():
    for arch, vocab, low, high in (("t5_small", 32128, 55e6, 65e6), ("t5_tiny", 8000, 1e6, 3e6)):
        dictionary = Dictionary()
        for k in range(vocab - len(dictionary)):
            dictionary.add_symbol(f"w{k}")
        args = argparse.Namespace()
        ARCH_CONFIG_REGISTRY[arch](args)
        model = ARCH_MODEL_REGISTRY[arch].build_model(args, TranslationTask(TranslationConfig(), dictionary, dictionary))
        count = sum(p.numel() for p in model.parameters())
        print(f"{arch}: {count:,} parameters with a {len(dictionary)}-entry vocabulary "
              f"({args.encoder_layers}+{args.decoder_layers} layers, width {args.encoder_embed_dim})")
        assert low < count < high
        embedding = model.encoder.embed_tokens.weight
        assert embedding is model.decoder.output_projection.weight  # shared
        assert args.encoder_normalize_before and args.decoder_normalize_before  # pre-norm
        # T5: unit-variance embedding, unscaled at the input, output scaled by width^-0.5
        assert abs(embedding.std().item() - 1) < 0.02 and model.encoder.embed_scale == 1.0
        assert model.decoder.embed_scale == 1.0 and not embedding[dictionary.pad()].any()
        features = torch.randn(2, 3, args.encoder_embed_dim)
        torch.testing.assert_close(model.decoder.output_layer(features),
                                   features @ embedding.T / math.sqrt(args.encoder_embed_dim))


def test_commands_are_t5s_adafactor():
    """The shipped presets' commands: relative step, T5's schedule, no momentum in the
    baseline, the paper's guided variants with beta1 starting at 0.9."""
    paper = {v: recipe.pretrain_command("paper", v, "DATA", "SAVE") for v in recipe.VARIANTS}
    value = {v: dict(zip(cmd, cmd[1:])) for v, cmd in paper.items()}
    for variant, cmd in paper.items():
        assert "--scale-parameter" in cmd and "--fp16" in cmd
        assert value[variant]["--lr"] == value[variant]["--warmup-init-lr"] == "0.01"
        assert value[variant]["--warmup-updates"] == "10000" and value[variant]["--lr-scheduler"] == "inverse_sqrt"
        assert value[variant]["--arch"] == "t5_small" and value[variant]["--batch-size"] == "128"
        assert value[variant]["--max-tokens"] == str(128 * 512) and value[variant]["--inputs-length"] == "512"
    assert "--beta1" not in paper["baseline"] and "--guided-hparams" not in paper["baseline"]
    assert "--beta1" not in paper["alpha"] and value["alpha"]["--guided-hparams"] == "alpha"
    for variant in ("beta1", "alpha_beta1"):
        assert value[variant]["--beta1"] == "0.9" and value[variant]["--guided-meta-lr"] == "1e-05"
    assert value["alpha_beta1"]["--guided-hparams"] == "alpha,beta1"
    assert recipe.settings("paper")["vocab_size"] == 32000
    for pretrained in (None, "CKPT"):
        ft = recipe.finetune_command("tiny", "SENT", "SAVE", 1, pretrained, finetune_updates=7)
        assert "--scale-parameter" in ft and "--beta1" not in ft and "--fp16" not in ft
        assert dict(zip(ft, ft[1:]))["--max-update"] == "7"
        assert ("--restore-file" in ft) == (pretrained is not None)
    assert set(recipe.PRESETS["tiny"]) == set(recipe.PRESETS["paper"])
    assert all(source for preset in recipe.PRESETS.values() for _, source in preset.values())


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


def wilson_bounds_hold(interval, correct, n):
    """Each end p0 of the Wilson score interval solves |p - p0| = z sqrt(p0 (1 - p0) / n)."""
    p = correct / n
    for p0 in interval:
        assert abs(abs(p - p0) - Z95 * math.sqrt(p0 * (1 - p0) / n)) < 1e-9, (interval, correct, n)
    assert interval[0] <= p <= interval[1]


def test_recipe_pretrains_guided_then_finetunes_and_scores(prepared, tmp_path):
    data, _ = prepared
    out = run([BIN / "python", REPO / "scripts" / "t5_recipe.py", "--data", data / "bin", "--out", tmp_path,
               "--vocab-size", vocab_pieces(data / "bin"), "--pretrain-updates", 20, "--validate-every", 10,
               "--finetune-updates", 8, "--max-tokens", 2048])
    assert out.returncode == 0, out.stdout[-3000:]
    print(out.stdout)
    results = json.loads((tmp_path / "results.json").read_text())
    by_variant = {r["variant"]: r for r in results["runs"]}
    assert set(by_variant) == {"baseline", "alpha_beta1", "no_pretraining"}
    rows = json_logs((tmp_path / "alpha_beta1-seed1" / "pretrain.log").read_text())
    alphas = [float(r["guided_alpha"]) for r in rows]
    betas = [float(r["guided_beta1"]) for r in rows]
    assert len(rows) == 2 and all(np.isfinite(alphas + betas))
    assert abs(alphas[0] - 1.0) > 1e-3 and alphas[1] != alphas[0], alphas
    assert abs(betas[0] - 0.9) > 1e-4 and betas[1] != betas[0], betas
    assert by_variant["baseline"]["final_learned"] == {}
    # what fairseq-train itself ran with: relative step on, no first moment in the baseline
    for variant, beta1 in (("baseline", None), ("alpha_beta1", 0.9)):
        log = (tmp_path / f"{variant}-seed1" / "pretrain.log").read_text()
        assert "'scale_parameter': True" in log and f"'beta1': {beta1}," in log, variant
    assert "pretrain_cmd" not in by_variant["no_pretraining"]
    assert "--restore-file" not in by_variant["no_pretraining"]["finetune_cmd"]

    # the majority-class control, recomputed from the text labels
    raw = data / "sentiment" / "raw"
    majority, _ = Counter((raw / "train.tgt").read_text().split()).most_common(1)[0]
    test_labels = (raw / "test.tgt").read_text().split()
    control = results["majority_class"]
    assert control["accuracy"] == test_labels.count(majority) / 8 and control["n"] == 8
    wilson_bounds_hold(control["ci95"], control["correct"], 8)
    assert re.search(rf"majority class\s+{control['accuracy']:.4f}", out.stdout)

    hits = {}
    for run_ in results["runs"]:
        test = run_["test"]
        assert test["n"] == 8 and test["accuracy"] == test["correct"] / 8
        wilson_bounds_hold(test["ci95"], test["correct"], 8)
        log = (tmp_path / f"{run_['variant']}-seed1" / "generate.log").read_text()
        hyp = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", log, flags=re.M))
        ref = dict(re.findall(r"^T-(\d+)\t(.*)$", log, flags=re.M))
        assert len(hyp) == len(ref) == 8
        hits[run_["variant"]] = [hyp[i].strip() == ref[i].strip() for i in sorted(ref, key=int)]
        assert sum(hits[run_["variant"]]) == test["correct"]
        assert re.search(rf"test accuracy {test['accuracy']:.4f} \[{test['ci95'][0]:.3f}, "
                         rf"{test['ci95'][1]:.3f}\] on 8 snippets", out.stdout)
        if run_["variant"] == "no_pretraining":
            continue
        updates = [u for u, _ in run_["valid_curve"]]  # every 10 updates, and at epoch ends
        assert 10 in updates and updates[-1] == 20, updates
        assert all(np.isfinite(loss) and loss > 0 for _, loss in run_["valid_curve"])
    for variant in ("baseline", "alpha_beta1"):  # paired with the control, snippet by snippet
        paired = by_variant[variant]["vs_no_pretraining"]
        only = [sum(a and not b for a, b in zip(hits[variant], hits["no_pretraining"])),
                sum(b and not a for a, b in zip(hits[variant], hits["no_pretraining"]))]
        assert [paired["only_this_right"], paired["only_control_right"]] == only
        p = binomtest(only[0], sum(only), 0.5).pvalue if sum(only) else 1.0  # exact McNemar
        assert paired["mcnemar_p"] == pytest.approx(p)
    assert (tmp_path / "valid_curves.png").stat().st_size > 0


def test_paper_preset_asks_for_t5s_vocabulary(prepared, tmp_path):
    data, _ = prepared
    out = run([BIN / "python", REPO / "scripts" / "t5_recipe.py", "--data", data / "bin", "--out", tmp_path,
               "--preset", "paper"])
    assert out.returncode != 0 and "asks for a 32000-piece vocabulary" in out.stdout, out.stdout[-2000:]
    assert "--vocab-size 32000" in out.stdout and not (tmp_path / "results.json").exists()


SHRINK_T5 = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim",
             "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads",
             "2", "--decoder-attention-heads", "2"]


@pytest.mark.parametrize("preset", sorted(recipe.PRESETS))
def test_every_preset_command_takes_updates(prepared, tmp_path, preset):
    """Each preset's exact pretraining (guided alpha+beta1) and fine-tuning commands through
    fairseq-train's own code, the model shrunk and each run cut to two updates; the
    paper preset's flat --fp16 with its CUDA calls stood in for on a CPU
    (tests/launchers/cpu_as_cuda.py)."""
    data, _ = prepared
    launch = [sys.executable, REPO / "tests" / "launchers" / "cpu_as_cuda.py", "fairseq-train"]
    pre = recipe.pretrain_command(preset, "alpha_beta1", data / "bin", tmp_path / "pre", pretrain_updates=2,
                                     validate_every=2, inputs_length=64)
    out = run(launch + pre[1:] + SHRINK_T5)
    assert out.returncode == 0, out.stdout[-3000:]
    epoch = json_logs(out.stdout, "train")[-1]  # the end-of-epoch row: two updates < --log-interval
    assert epoch["train_num_updates"] == "2" and float(epoch["train_guided_alpha"]) != 1.0, epoch
    assert ("train_loss_scale" in epoch) == (preset == "paper")  # FP16Optimizer for the GPU preset
    fine = recipe.finetune_command(preset, data / "sentiment" / "bin", tmp_path / "fine", finetune_updates=2)
    out = run(launch + fine[1:] + SHRINK_T5)
    assert out.returncode == 0, out.stdout[-3000:]
