"""The main job end to end with the tiny preset: real offline corpus from Debian's archive,
four variants trained and scored, and a report with every row, finite BLEU, and plots."""
import csv
import json
import math
import subprocess
import sys
from collections import defaultdict

import matplotlib.image
import pytest

from conftest import ENV, REPO

VARIANTS = ["base", "alpha", "beta1", "alpha+beta1"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("main_job")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "main_job.py"), "--preset", "tiny",
                          "--data-dir", str(root / "data"), "--runs", str(root / "runs"), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert out.returncode == 0, out.stdout[-4000:]
    return root / "runs" / "report", out.stdout


def test_progress_lines_name_each_stage(report):
    _, stdout = report
    assert "[main_job] stage 1/10: prepare" in stdout
    for i, variant in enumerate(VARIANTS):
        assert f"[main_job] stage {2 + i}/10: train {variant}, seed 1 (run {i + 1} of 4)" in stdout
        assert f"[main_job] stage {2 + i}/10: train {variant}, seed 1 done in" in stdout


def test_bleu_table_has_every_row_with_a_finite_score(report):
    folder, _ = report
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in (folder / "bleu_table.md").read_text().splitlines()[2:]}
    assert list(rows) == VARIANTS
    for variant, score in rows.items():
        assert math.isfinite(float(score)) and 0 <= float(score) <= 100, (variant, score)
    for variant in VARIANTS:  # the scores come from sacrebleu on the real references
        run = json.loads((folder.parent / f"{variant}-seed1" / "run.json").read_text())
        assert run["bleu_signature"].startswith("nrefs:1|") and "tok:13a" in run["bleu_signature"]


def test_plots_are_pngs_of_the_expected_curves(report):
    folder, _ = report
    series = defaultdict(set)
    with open(folder / "curves.csv") as f:
        for row in csv.DictReader(f):
            series[row["figure"]].add(row["run"])
    assert series["alpha.png"] == {"alpha seed 1", "alpha+beta1 seed 1"}
    assert series["beta1.png"] == {"beta1 seed 1", "alpha+beta1 seed 1"}
    assert series["guide_loss.png"] == {"alpha seed 1", "beta1 seed 1", "alpha+beta1 seed 1"}
    assert series["valid_loss.png"] == {f"{v} seed 1" for v in VARIANTS}
    for name in series:
        data = (folder / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(folder / name).shape
        assert width > 300 and height > 200


def test_commands_and_summary_are_recorded(report):
    folder, _ = report
    commands = (folder / "commands.sh").read_text()
    assert commands.count("fairseq-hydra-train --config-dir") == 4 and commands.count("fairseq-generate") == 4
    assert commands.count("--config-name tiny") == 4
    assert "prepare_offline_corpus.sh" in commands and "optimizer.guided_hparams=alpha\\,beta1" in commands
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["wall_seconds"] > 0 and len(summary["stage_seconds"]) == 9


def test_a_second_call_resumes_and_redoes_nothing(report):
    folder, _ = report
    runs = folder.parent
    before = {p: p.stat().st_mtime for p in runs.glob("*/checkpoints/checkpoint_last.pt")}
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "main_job.py"), "--preset", "tiny",
                          "--data-dir", str(runs.parent / "data"), "--runs", str(runs), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert out.returncode == 0, out.stdout[-3000:]
    assert out.stdout.count("had finished before: skipped") == 4
    assert {p: p.stat().st_mtime for p in runs.glob("*/checkpoints/checkpoint_last.pt")} == before
    assert len(before) == 4


def test_hydra_preset_config_trains(tiny_corpus, tmp_path):
    """fairseq-hydra-train runs a preset yaml as a user would, with a variant override
    (model shrunk and languages set for the small test corpus)."""
    from conftest import BIN, json_logs, run

    overrides = [f"task.data={tiny_corpus}", f"common.user_dir={REPO / 'fairseq_guided'}",
                 "task.source_lang=src", "task.target_lang=tgt", "model.encoder.layers=1",
                 "model.decoder.layers=1", "model.encoder.embed_dim=32", "model.decoder.embed_dim=32",
                 "model.encoder.ffn_embed_dim=64", "model.decoder.ffn_embed_dim=64",
                 "dataset.max_tokens=1000", "task.guidance_max_tokens=500", "optimization.max_update=3",
                 "common.log_interval=1", f"checkpoint.save_dir={tmp_path}", "checkpoint.no_save=true",
                 "dataset.validate_interval_updates=0", "common.cpu=true", f"hydra.run.dir={tmp_path}",
                 "optimizer.guided_hparams=alpha\\,beta1"]
    out = run([BIN / "fairseq-hydra-train", "--config-dir", REPO / "configs" / "nmt",
               "--config-name", "cpu", *overrides])
    assert out.returncode == 0, out.stdout[-3000:]
    rows = [r for r in (json_logs(out.stdout.replace("][train_inner][INFO] - ", " | train_inner | ")))]
    assert len(rows) == 3 and "guided_alpha" in rows[-1] and "guided_beta1" in rows[-1]
