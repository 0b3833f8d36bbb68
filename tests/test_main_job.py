"""The main job end to end with the tiny preset and two seeds: real offline corpus from
Debian's archive with the held-out Debian test set, four variants trained and scored on both
test sets, and a report whose every row, interval, bootstrap field and claim line is checked
against numbers recomputed here (not the outcome: tiny models do not translate). Then the
two studies, as documented, with only their size flags added."""
import csv
import json
import math
import subprocess
import sys
from collections import defaultdict

import matplotlib.image
import pytest
from scipy.stats import t

from conftest import BIN, ENV, REPO

VARIANTS = ["base", "alpha", "beta1", "alpha+beta1"]
SUBSETS = ["test", "test_debian"]
SEEDS = ["1", "2"]
MAIN = [sys.executable, str(REPO / "scripts" / "main_job.py"), "--preset", "tiny", "--seeds", "1,2", "--quiet"]


def main_job(root, *extra):
    out = subprocess.run(MAIN + ["--data-dir", str(root / "data"), "--runs", str(root / "runs"), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert out.returncode == 0, out.stdout[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("main_job")
    stdout = main_job(root)
    return root / "runs" / "report", stdout


def run_json(folder, variant, seed):
    return json.loads((folder.parent / f"{variant}-seed{seed}" / "run.json").read_text())


def lines(path):
    return path.read_text().splitlines()


def test_progress_lines_name_each_stage(report):
    _, stdout = report
    stages = 1 + 8 * 3 + 1  # prepare, 8 trainings, 16 evaluations, report
    assert f"[main_job] stage 1/{stages}: prepare" in stdout
    for i, (seed, variant) in enumerate((s, v) for s in SEEDS for v in VARIANTS):
        assert f"[main_job] stage {2 + i}/{stages}: train {variant}, seed {seed} (run {i + 1} of 8)" in stdout
    assert f"[main_job] stage 25/{stages}: evaluate alpha+beta1, seed 2 on test_debian" in stdout


def test_the_held_out_debian_set_is_apart_from_the_corpus(report):
    folder, _ = report
    raw = folder.parent.parent / "data" / "raw"
    held = {lang: lines(raw / f"test_debian.{lang}") for lang in ("de", "en")}
    assert len(held["de"]) == len(held["en"]) == 50
    for split in ("train", "guide", "valid", "test"):
        for lang in ("de", "en"):
            assert not set(held[lang]) & set(lines(raw / f"{split}.{lang}")), (split, lang)
    assert len(lines(folder.parent / "beta1-seed2" / "test_debian.hyp.en")) == 50


def test_table_rows_and_intervals_recomputed_from_the_seeds(report):
    folder, _ = report
    table = json.loads((folder / "table1.json").read_text())
    assert list(table["subsets"]) == SUBSETS
    markdown = lines(folder / "bleu_table.md")
    for subset in SUBSETS:
        rows = table["subsets"][subset]["rows"]
        assert list(rows) == VARIANTS
        head = markdown.index(next(line for line in markdown if line.startswith(f"### de-en BLEU on `{subset}`")))
        shown = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                 for line in markdown[head + 4:head + 8]}
        assert list(shown) == VARIANTS
        for variant in VARIANTS:
            key = "bleu" if subset == "test" else "bleu_test_debian"
            seeds = [run_json(folder, variant, s)[key] for s in SEEDS]
            assert all(math.isfinite(b) and 0 <= b <= 100 for b in seeds)
            row = rows[variant]
            assert row["bleu"] == dict(zip(SEEDS, seeds)) and row["n"] == 2
            mean, sd = sum(seeds) / 2, abs(seeds[0] - seeds[1]) / math.sqrt(2)
            half = t.ppf(0.975, 1) * sd / math.sqrt(2)  # 12.71 x sd / sqrt(2) for two seeds
            assert row["mean"] == pytest.approx(mean) and row["sd"] == pytest.approx(sd)
            assert row["ci"] == pytest.approx([mean - half, mean + half])
            assert shown[variant] == [f"{seeds[0]:.2f}", f"{seeds[1]:.2f}", f"{mean:.2f}", f"{sd:.2f}",
                                      f"[{mean - half:.2f}, {mean + half:.2f}]"]


def test_paired_bootstrap_fields_match_sacrebleus_own_command(report):
    import sacrebleu

    folder, _ = report
    table = json.loads((folder / "table1.json").read_text())
    raw = folder.parent.parent / "data" / "raw"
    for subset in SUBSETS:
        key = "bleu" if subset == "test" else "bleu_test_debian"
        refs = lines(raw / f"{subset}.en")
        comparisons = table["subsets"][subset]["vs_base"]
        assert list(comparisons) == VARIANTS[1:]
        for variant, c in comparisons.items():
            deltas = [run_json(folder, variant, s)[key] - run_json(folder, "base", s)[key] for s in SEEDS]
            assert [c["per_seed"][s]["delta"] for s in SEEDS] == pytest.approx(deltas)
            assert all(1 / 1001 <= c["per_seed"][s]["p"] <= 1 for s in SEEDS)
            assert c["delta"]["mean"] == pytest.approx(sum(deltas) / 2)
            pooled = [h for s in SEEDS for h in lines(folder.parent / f"{variant}-seed{s}" / f"{subset}.hyp.en")]
            assert c["pooled"]["system"] == pytest.approx(sacrebleu.corpus_bleu(pooled, [refs * 2]).score)
            assert 1 / 1001 <= c["pooled"]["p"] <= 1 and c["pooled"]["samples"] == 1000
    # the per-seed p-value of the largest difference against `sacrebleu --paired-bs` itself
    # (same default seed 12345); an exact tie is reported as p = 1 instead of sacrebleu's 1/1001
    variant, seed = max(((v, s) for v in VARIANTS[1:] for s in SEEDS),
                        key=lambda vs: abs(table["subsets"]["test"]["vs_base"][vs[0]]["per_seed"][vs[1]]["delta"]))
    ours = table["subsets"]["test"]["vs_base"][variant]["per_seed"][seed]
    runs = folder.parent
    out = subprocess.run([str(BIN / "sacrebleu"), str(raw / "test.en"), "-i",
                          str(runs / f"base-seed{seed}" / "test.hyp.en"), str(runs / f"{variant}-seed{seed}" / "test.hyp.en"),
                          "-m", "bleu", "--paired-bs", "-f", "json"], stdout=subprocess.PIPE, text=True, env=ENV)
    cli = json.loads(out.stdout)[1]["BLEU"]
    assert ours["p"] == (1.0 if ours["delta"] == 0 else pytest.approx(cli["p_value"]))


def claim_lines(folder):
    text = lines(folder / "findings.md")
    found = {k: [line for line in text if line.startswith(f"**Claim {k}**")] for k in range(1, 6)}
    assert all(len(v) == 1 for v in found.values()), found
    return {k: v[0] for k, v in found.items()}


def test_claim5_judges_lr_sensitivity_by_paired_differences_not_spans():
    """A guided arm whose 1x score is lower has the smaller span of mean BLEU over the lrs
    without scoring higher anywhere: that is not 'less sensitive'. Only higher scores than
    base, paired by seed, beyond seed noise at every other multiple are."""
    from guided_recipes.report import findings

    def rows(table):
        return {"rows": [{"variant": v, "values": {"lr": 0.01 * scale, "lr_scale": scale}, "seed": seed, "bleu": b}
                         for (v, scale), scores in table.items() for seed, b in enumerate(scores, 1)]}

    base = {("base", 0.25): [7.7, 7.4, 8.0], ("base", 1.0): [20.3, 18.0, 19.6], ("base", 4.0): [0.0, 0.0, 0.0]}
    lower_at_1x = rows({**base, ("guided", 0.25): [8.7, 7.2, 8.8], ("guided", 1.0): [17.7, 15.8, 16.7],
                        ("guided", 4.0): [0.1, 0.0, 0.1]})
    diffs = findings.lr_scale_differences(lower_at_1x["rows"])["guided"]
    quarter = [8.7 - 7.7, 7.2 - 7.4, 8.8 - 8.0]
    half = t.ppf(0.975, 2) * (sum((d - sum(quarter) / 3) ** 2 for d in quarter) / 2) ** 0.5 / 3 ** 0.5
    assert diffs[0.25]["mean"] == pytest.approx(sum(quarter) / 3)
    assert diffs[0.25]["ci"] == pytest.approx([sum(quarter) / 3 - half, sum(quarter) / 3 + half])
    text = findings.claim5(lower_at_1x)
    assert "guided - base at the same lr multiple: 0.25x +0.53" in text and "1x -2.57" in text
    assert "guided is not shown less sensitive to the lr" in text and "flatter" not in text

    higher_off = rows({**base, ("guided", 0.25): [9.7, 9.5, 10.1], ("guided", 1.0): [20.0, 18.1, 19.5],
                       ("guided", 4.0): [3.0, 3.2, 2.9]})
    text = findings.claim5(higher_off)
    assert "4x +3.03" in text and "guided is less sensitive to the lr (higher beyond seed noise" in text


def test_claim5_reads_the_sweep_comparison_by_paired_bootstrap_and_compute():
    """Claim 5 is the paper's Table 2: a guided row beats BO's tuning only when its test BLEU
    is higher by the paired bootstrap (p < 0.05) at less compute than BO's trials took."""
    from guided_recipes.report import findings

    def row(name, trials, seconds, bleu, vs=None):
        r = {"row": name, "trials": trials, "completed": trials, "wall_seconds": seconds, "test_bleu": bleu,
             "selected": {"params": {"static.lr": 0.0067, "static.beta1": 0.914} if name == "base-bo" else {}}}
        return dict(r, vs_bo={"delta": vs[0], "p": vs[1]}) if vs else r

    table2 = {"rows": [row("base-bo", 12, 4200.0, 18.0), row("beta1", 1, 420.0, 17.0, (-1.0, 0.02)),
                       row("alpha+beta1", 1, 480.0, 18.5, (0.5, 0.3)), row("alpha-meta-lr", 4, 1680.0, 19.2, (1.2, 0.01)),
                       row("costly", 14, 5000.0, 19.5, (1.5, 0.001))]}
    text = findings.claim5(None, table2)
    assert "BO of base's static values (12 trials, 70 min) selected lr 0.0067, beta1 0.914: test BLEU 18.00" in text
    assert "beta1 (untuned, 7 min, 0.10x BO's compute): test BLEU 17.00, -1.00 (paired bootstrap p = 0.020): " \
           "below BO's tuning on this seed beyond test-set noise" in text
    assert "alpha+beta1 (untuned, 8 min, 0.11x BO's compute): test BLEU 18.50, +0.50 (paired bootstrap p = 0.300): " \
           "within test-set noise" in text
    assert "alpha-meta-lr (4 trials, 28 min, 0.40x BO's compute): test BLEU 19.20, +1.20 (paired bootstrap p = " \
           "0.010): beats BO's tuning on this seed" in text
    assert "costly (14 trials, 83 min, 1.19x BO's compute)" in text and "higher but not at less compute" in text
    assert text.endswith("lr sensitivity not run either")
    assert findings.claim5(None).startswith("not run: the sweep comparison with Bayesian optimisation, "
                                            "`python scripts/sweep.py`")


def test_findings_has_a_line_per_claim(report):
    folder, _ = report
    claims = claim_lines(folder)
    delta = json.loads((folder / "table1.json").read_text())["subsets"]["test"]["vs_base"]["beta1"]["delta"]
    assert f"on `test` beta1 - base = {delta['mean']:+.2f} BLEU over 2 seed(s)" in claims[1]
    assert "seed noise" in claims[1] and "`test_debian`" in claims[1]
    for k in (2, 3):  # their study has not run yet
        assert "not run: `python scripts/main_job.py --preset tiny --study schedules`" in claims[k]
    assert "final alpha seed 1:" in claims[4]
    assert "not run: the sweep comparison with Bayesian optimisation, `python scripts/sweep.py`" in claims[5]


def test_plots_are_pngs_of_the_expected_curves(report):
    folder, _ = report
    series = defaultdict(set)
    with open(folder / "curves.csv") as f:
        for row in csv.DictReader(f):
            series[row["figure"]].add(row["run"])
    assert series["alpha.png"] == {f"{v} seed {s}" for v in ("alpha", "alpha+beta1") for s in SEEDS}
    assert series["beta1.png"] == {f"{v} seed {s}" for v in ("beta1", "alpha+beta1") for s in SEEDS}
    assert series["valid_loss.png"] == {f"{v} seed {s}" for v in VARIANTS for s in SEEDS}
    for name in series:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(folder / name).shape
        assert width > 300 and height > 200


def test_commands_and_summary_are_recorded(report):
    folder, _ = report
    commands = (folder / "commands.sh").read_text()
    assert commands.count("fairseq-hydra-train --config-dir") == 8 and commands.count("fairseq-generate") == 16
    assert commands.count("--gen-subset test_debian") == 8 and commands.count("--config-name tiny") == 8
    assert "prepare_offline_corpus.sh" in commands and "--debian-test-size 50" in commands
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["wall_seconds"] > 0 and len(summary["stage_seconds"]) == 25
    assert summary["test_sets"] == SUBSETS


def test_a_second_call_resumes_and_redoes_nothing(report):
    folder, _ = report
    runs = folder.parent
    before = {p: p.stat().st_mtime for p in runs.glob("*/checkpoints/checkpoint_last.pt")}
    stdout = main_job(runs.parent)
    assert stdout.count("had finished before: skipped") == 8
    assert {p: p.stat().st_mtime for p in runs.glob("*/checkpoints/checkpoint_last.pt")} == before
    assert len(before) == 8


def test_schedules_study(report):
    """Fig. 1 and 2 on a smaller grid (size flags only): runs named by setting, the learned
    curves start at their initial values, and findings now reports claims 2 and 3."""
    folder, _ = report
    stdout = main_job(folder.parent.parent, "--study", "schedules", "--seeds", "1", "--beta1-inits", "0.5,0.99",
                      "--beta1-meta-lr-scales", "1", "--alpha-meta-lr-scales", "1")
    assert "[main_job] study schedules: 3 runs (3 to train, 3 to score)" in stdout
    study = json.loads((folder / "schedules.json").read_text())
    names = ["beta1-init0.5-metalr0.01", "beta1-init0.99-metalr0.01", "alpha-metalr0.01"]
    assert [r["setting"] for r in study["rows"]] == names
    runs = folder.parent.parent / "study_schedules-tiny"
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{n}-seed1" for n in names)
    info = json.loads((runs / "beta1-init0.5-metalr0.01-seed1" / "run.json").read_text())
    assert "optimizer.lamb_betas='(0.5,0.999)'" in info["overrides"] and info["variant"] == "beta1"
    for row, start in zip(study["rows"], (0.5, 0.99, 1.0)):
        assert row["curve"][0] == [0, start] and len(row["curve"]) > 2
        assert abs(row["curve"][1][1] - start) < 0.05  # two updates in: near where it began
        assert row["final"] == row["curve"][-1][1] and math.isfinite(row["bleu"])
    assert (folder / "commands_schedules.sh").read_text().count("fairseq-hydra-train --config-dir") == 3
    for png in ("fig1_alpha.png", "fig2_beta1.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    claims = claim_lines(folder)
    assert "meta lr 0.01: final beta1" in claims[2] and "from 0.5" in claims[2] and "from 0.99" in claims[2]
    assert "meta lr 0.01: final alpha" in claims[3] and "lowest reachable" in claims[3]
    bleu = {r["setting"]: r["bleu"] for r in study["rows"]}
    assert f"test BLEU {bleu['beta1-init0.5-metalr0.01']:.2f} from 0.5, {bleu['beta1-init0.99-metalr0.01']:.2f} " \
           "from 0.99" in claims[2]
    alpha = study["rows"][2]
    peak = max(alpha["curve"], key=lambda point: point[1])
    assert f"highest {peak[1]:.3g} at update {peak[0]}, test BLEU {alpha['bleu']:.2f}" in claims[3]
    shown = alpha["final"] < 1 and math.log(alpha["final"]) / (-0.01 * alpha["updates"]) >= 0.5
    assert (": shown at every meta lr" if shown else ": not shown at any meta lr") in claims[3]


def test_lr_sensitivity_study_reuses_the_main_jobs_1x_runs(report):
    folder, _ = report
    stdout = main_job(folder.parent.parent, "--study", "lr-sensitivity", "--seeds", "1", "--lr-scales", "0.25,1")
    assert "[main_job] study lr-sensitivity: 4 runs (2 to train, 2 to score)" in stdout
    study = json.loads((folder / "lr_sensitivity.json").read_text())
    assert [(r["setting"], r["values"]["lr"]) for r in study["rows"]] == [
        ("base-lr0.0025", 0.0025), ("alpha+beta1-lr0.0025", 0.0025), ("base-lr0.01", 0.01),
        ("alpha+beta1-lr0.01", 0.01)]
    assert study["rows"][2]["run"] == str(folder.parent / "base-seed1")
    assert study["rows"][2]["bleu"] == run_json(folder, "base", 1)["bleu"]
    info = json.loads((folder.parent.parent / "study_lr-sensitivity-tiny" / "base-lr0.0025-seed1" / "run.json")
                      .read_text())
    assert info["overrides"] == ["optimization.lr=[0.0025]"]
    assert (folder / "lr_sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    claim5 = claim_lines(folder)[5]
    assert "lr sensitivity (test BLEU): base: lr 0.0025" in claim5
    bleu = {r["setting"]: r["bleu"] for r in study["rows"]}
    quarter = bleu["alpha+beta1-lr0.0025"] - bleu["base-lr0.0025"]
    assert f"alpha+beta1 - base at the same lr multiple: 0.25x {quarter:+.2f} (no interval (one seed)" in claim5
    assert "alpha+beta1 is not shown less sensitive to the lr" in claim5


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


def test_the_readme_part_commands_run_on_the_job_s_runs(report, tmp_path):
    """The README's one-part-at-a-time commands, as written (tiny preset), on the finished
    runs: train skips a finished run, evaluate returns its stored score, the plot and table
    scripts rebuild the report's figures and Table 1."""
    folder, _ = report
    runs, data = folder.parent, folder.parent.parent / "data"

    def cli(*args):
        out = subprocess.run([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=ENV)
        assert out.returncode == 0, out.stdout[-3000:]
        return out.stdout

    out = cli(REPO / "scripts" / "nmt_recipe.py", "train", "--data", data / "bin", "--variant", "beta1", "--seed", 1,
              "--preset", "tiny", "--out", runs)
    assert "had finished; nothing to do" in out
    out = cli(REPO / "scripts" / "nmt_recipe.py", "evaluate", "--data", data / "bin", "--raw", data / "raw",
              "--run", runs / "beta1-seed1", "--preset", "tiny")
    assert f"BLEU = {run_json(folder, 'beta1', 1)['bleu']:.2f}" in out
    cli(REPO / "user_scripts" / "plot_schedules.py", runs, "--out", tmp_path)
    assert (tmp_path / "beta1.png").read_bytes()[:4] == b"\x89PNG"
    table = cli(REPO / "user_scripts" / "compare_table.py", runs, "--raw", data / "raw")
    assert all(f"| {v} |" in table for v in VARIANTS), table


def test_tuning_free_arms_extend_table1_and_the_lr_study(report):
    """--with-tuning-free (issue 16), as the README runs it, on the finished main job: only
    the schedule-free AdamW and Prodigy runs train, each with the package's optimizer at its
    default lr and the preset's model and budget; Table 1 gains their rows and the paired
    guided-minus-arm comparisons (recomputed here), findings its line; the lr study adds
    each arm at the same multiples of its own lr, reusing its 1x run."""
    import torch

    folder, _ = report
    runs = folder.parent
    stdout = main_job(runs.parent, "--with-tuning-free")
    assert stdout.count("had finished before: skipped") == 8
    for arm, name, lr in (("schedulefree", "schedulefree_adamw", 0.0025), ("prodigy", "prodigy", 1.0)):
        for seed in SEEDS:
            assert run_json(folder, arm, seed)["variant"] == arm
            state = torch.load(runs / f"{arm}-seed{seed}" / "checkpoints" / "checkpoint_last.pt",
                               map_location="cpu", weights_only=False)
            cfg = state["cfg"]
            assert (cfg["optimizer"]["_name"], cfg["optimization"]["lr"], cfg["task"]["_name"]) == (
                name, [lr], "translation")
            assert cfg["optimization"]["max_update"] == 12 and cfg["model"]["encoder"]["layers"] == 1
    table = json.loads((folder / "table1.json").read_text())
    for subset in SUBSETS:
        key = "bleu" if subset == "test" else "bleu_test_debian"
        entry = table["subsets"][subset]
        assert list(entry["rows"]) == VARIANTS + ["schedulefree", "prodigy"]
        assert list(entry["vs_tuning_free"]) == [f"{g} - {a}" for a in ("schedulefree", "prodigy")
                                                 for g in ("beta1", "alpha+beta1")]
        for name, c in entry["vs_tuning_free"].items():
            guided, arm = name.split(" - ")
            deltas = [run_json(folder, guided, s)[key] - run_json(folder, arm, s)[key] for s in SEEDS]
            assert [c["per_seed"][s]["delta"] for s in SEEDS] == pytest.approx(deltas)
            assert c["delta"]["mean"] == pytest.approx(sum(deltas) / 2)
    assert "| guided - tuning-free |" in (folder / "bleu_table.md").read_text()
    beyond = [line for line in lines(folder / "findings.md") if line.startswith("**Beyond the paper**")]
    c = table["subsets"]["test"]["vs_tuning_free"]["alpha+beta1 - prodigy"]["delta"]
    assert len(beyond) == 1 and f"on `test` alpha+beta1 - prodigy = {c['mean']:+.2f} BLEU over 2 seed(s)" in beyond[0]

    stdout = main_job(runs.parent, "--study", "lr-sensitivity", "--seeds", "1", "--lr-scales", "0.25,1",
                      "--with-tuning-free")
    assert "[main_job] study lr-sensitivity: 8 runs (" in stdout
    study = json.loads((folder / "lr_sensitivity.json").read_text())
    rows = {r["setting"]: r for r in study["rows"]}
    assert rows["prodigy-lr0.25"]["values"]["lr"] == 0.25 and rows["schedulefree-lr0.0025"]["run"] == str(
        runs / "schedulefree-seed1")
    info = json.loads((runs.parent / "study_lr-sensitivity-tiny" / "schedulefree-lr0.000625-seed1" / "run.json")
                      .read_text())
    assert info["overrides"] == ["optimization.lr=[0.000625]"] and info["variant"] == "schedulefree"
    assert "prodigy: lr 0.25" in claim_lines(folder)[5]


def test_groups_study_pairs_grouped_with_the_main_jobs_global_runs(report):
    """--study groups (issue 14) as documented, on the finished main job: only the grouped
    alpha+beta1 runs train (embed,encoder,decoder), the global ones are the main job's; each
    group's alpha and beta1 are logged and plotted; the grouped-minus-global comparison is
    recomputed here from the runs' scores; findings gains its line."""
    folder, _ = report
    runs = folder.parent
    stdout = main_job(runs.parent, "--study", "groups")
    assert "[main_job] study groups: 4 runs (2 to train, 2 to score)" in stdout
    study = json.loads((folder / "groups.json").read_text())
    assert [(r["setting"], r["seed"]) for r in study["rows"]] == [
        ("alpha+beta1", 1), ("alpha+beta1", 2), ("alpha+beta1-groups_embed_encoder_decoder", 1),
        ("alpha+beta1-groups_embed_encoder_decoder", 2)]
    grouped_runs = runs.parent / "study_groups-tiny"
    for seed in (1, 2):
        info = json.loads((grouped_runs / f"alpha+beta1-groups_embed_encoder_decoder-seed{seed}" / "run.json")
                          .read_text())
        assert info["overrides"] == ["+optimizer.guided_groups=embed\\,encoder\\,decoder"]
        assert info["variant"] == "alpha+beta1" and math.isfinite(info["bleu"])
    rows = study["rows"]
    assert rows[0]["run"] == str(runs / "alpha+beta1-seed1")
    assert set(rows[0]["final"]) == {"guided_alpha", "guided_beta1"}
    # every prefix matched something in this model: no 'other' group
    assert set(rows[2]["final"]) == {f"guided_{k}/{g}" for k in ("alpha", "beta1")
                                     for g in ("embed", "encoder", "decoder")}
    assert len({round(v, 6) for k, v in rows[2]["final"].items() if "alpha" in k}) > 1  # groups moved apart
    c = study["vs_global"]["embed,encoder,decoder - global"]
    deltas = [rows[i + 2]["bleu"] - rows[i]["bleu"] for i in (0, 1)]
    assert [c["per_seed"][s]["delta"] for s in SEEDS] == pytest.approx(deltas)
    assert c["delta"]["mean"] == pytest.approx(sum(deltas) / 2) and 0 <= c["pooled"]["p"] <= 1
    b = study["vs_global"]["embed,encoder,decoder - base"]
    assert [b["per_seed"][s]["delta"] for s in SEEDS] == pytest.approx(
        [rows[i + 2]["bleu"] - run_json(folder, "base", s)["bleu"] for i, s in enumerate(SEEDS)])
    assert (folder / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(folder / "study_curves_groups.csv") as f:
        fields = {row["field"] for row in csv.DictReader(f)}
    assert "guided_alpha/encoder" in fields and "guided_beta1" in fields
    line = [x for x in lines(folder / "findings.md") if x.startswith("**Beyond the paper: per-group values**")]
    assert len(line) == 1 and f"`embed,encoder,decoder` - global = {c['delta']['mean']:+.2f} BLEU" in line[0]
    assert f"`embed,encoder,decoder` - base = {b['delta']['mean']:+.2f} BLEU" in line[0]
