"""Issue 24's studies as the README gives them (`scripts/main_job.py --study guidance`,
`--study calibration`, `--study horizon`), on the tiny preset with two seeds and only size
flags added. Every table row, interval, paired test, choice, plateau and plotted point is
recomputed here from the runs' own files; the outcome is not checked (tiny models do not
translate)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, REPO

sys.path.insert(0, str(REPO))
from guided_recipes.report import stats  # noqa: E402
from guided_recipes.report.runlogs import log_rows  # noqa: E402

MAIN = [sys.executable, str(REPO / "scripts" / "main_job.py"), "--preset", "tiny", "--seeds", "1,2", "--quiet"]
# tiny: 12 updates of 1,024 tokens, 512-token guidance, meta lr 0.01
GUIDED = {"beta1": [], "beta1-guide1024-never": ["task.guidance_max_tokens=1024"],
          "beta1-guide512-step": ["++task.guidance_refresh=step"],
          "beta1-guide1024-step": ["task.guidance_max_tokens=1024", "++task.guidance_refresh=step"],
          "beta1-metalr0.001": ["optimizer.guided_meta_lr=0.001"],
          "beta1-metalr0.003": ["optimizer.guided_meta_lr=0.003"]}
LONG = ["--validate-every", "2", "--plateau-window", "4", "--calibration-cap", "12"]


def main_job(root, *extra, code=0):
    out = subprocess.run(MAIN + ["--data-dir", str(root / "data"), "--runs", str(root / "runs"), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert out.returncode == code, out.stdout[-4000:]
    return out.stdout


def info(run):
    return json.loads((run / "run.json").read_text())


def lines(path):
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("horizon")
    main_job(root, "--study", "guidance")
    return root


def paired_expected(base_run, other_run, raw):
    refs = lines(raw / "test.en")
    test = stats.paired_bootstrap(lines(base_run / "test.hyp.en"), lines(other_run / "test.hyp.en"), refs)
    return info(other_run)["bleu"] - info(base_run)["bleu"], test["p"]


def test_guidance_study_rows_pairs_and_choice(root):
    report, study = root / "runs" / "report", root / "study_guidance-tiny"
    data = json.loads((report / "guidance.json").read_text())
    assert [r["setting"] for r in data["rows"]] == ["base", *GUIDED]
    raw = root / "data" / "raw"
    for row in data["rows"]:
        runs = {seed: study / f"{row['setting']}-seed{seed}" for seed in (1, 2)}
        if row["setting"] != "base":
            # today's setting is the preset as it is: no overrides recorded
            assert info(runs[1]).get("overrides", []) == GUIDED[row["setting"]]
        test = [info(r)["bleu"] for r in runs.values()]
        assert row["test"]["bleu"] == {str(s): info(r)["bleu"] for s, r in runs.items()}
        assert row["test"]["mean"] == pytest.approx(sum(test) / 2)
        assert row["test"]["ci"] == pytest.approx(stats.mean_ci(test)["ci"])
        assert all(info(r)["commit"] for r in runs.values())
        if row["setting"] == "base":
            assert "valid" not in row and "vs_base" not in row
            continue
        valid = [info(r)["bleu_valid"] for r in runs.values()]
        assert row["valid"]["mean"] == pytest.approx(sum(valid) / 2)
        for seed, run in runs.items():
            delta, p = paired_expected(study / f"base-seed{seed}", run, raw)
            assert row["vs_base"]["per_seed"][str(seed)] == pytest.approx({"delta": delta, "p": p})
        assert len(lines(runs[1] / "valid.hyp.en")) == len(lines(raw / "valid.en"))
    best = max((r for r in data["rows"] if "valid" in r), key=lambda r: r["valid"]["mean"])
    assert data["choice"]["setting"] == best["setting"] and data["choice"]["overrides"] == best["overrides"]
    stdout = (study / "beta1-guide512-step-seed1" / "train.stdout").read_text()
    assert "refresh=step" in stdout and "refresh=never" in (study / "beta1-seed1" / "train.stdout").read_text()
    table = (report / "guidance.md").read_text()
    assert f"Chosen for the horizon study: **{best['setting']}**" in table
    assert "**The guidance batch**" in (report / "findings.md").read_text()
    assert (report / "commands_guidance.sh").read_text().count("fairseq-hydra-train") == 14


@pytest.fixture(scope="module")
def calibrated(root):
    # a cap of 4 cannot show a plateau over 4 updates: a failed calibration, which a higher
    # cap continues from its last checkpoint
    short = [a if a != "12" else "4" for a in LONG]
    main_job(root, "--study", "calibration", *short)
    report, run = root / "runs" / "report", root / "study_calibration-tiny" / "base-calibration-seed1"
    assert json.loads((report / "calibration.json").read_text())["failed"]
    assert "--calibration-cap continues" in (report / "calibration.md").read_text()
    assert "run --study calibration first" in main_job(root, "--study", "horizon", *short, code=1)
    stdout = main_job(root, "--study", "calibration", *LONG)
    assert "it goes on to --calibration-cap 12" in stdout
    assert "Loaded checkpoint" in (run / "train.stdout").read_text()
    assert [a.get("stopped") for a in info(run)["attempts"]] == [None, info(run)["stopped"]]
    assert info(run)["reopened"] == [{"cap": 4, "new_cap": 12}] and info(run)["cap"] == 12
    return root, stdout


def test_calibration_stops_at_the_plateau_it_computes(calibrated):
    root, stdout = calibrated
    report = root / "runs" / "report"
    data = json.loads((report / "calibration.json").read_text())
    run = root / "study_calibration-tiny" / "base-calibration-seed1"
    rows = [(int(r["num_updates"]), float(r["bleu"])) for r in log_rows(run / "train.log", "valid")]
    assert [(p["update"], p["bleu"]) for p in data["curve"]] == rows
    assert [u for u, _ in rows] == list(range(2, rows[-1][0] + 1, 2))  # both attempts, each validation once
    expected = next(u for u, _ in rows if u - 4 in dict(rows) and
                    max(b for v, b in rows if v <= u) - max(b for v, b in rows if v <= u - 4) < 0.3)
    assert data["horizon"] == expected and rows[-1][0] == expected  # stopped at the plateau's validation
    assert info(run)["stopped"] == f"plateau at update {expected}" and info(run)["trained"]
    assert data["meta_lr"] == pytest.approx(3 / expected)
    assert (report / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_horizon_part_stops_then_the_same_command_finishes(calibrated):
    root, _ = calibrated
    stdout = main_job(root, "--study", "horizon", *LONG, "--part-minutes", "0.0001", code=75)
    assert "part over" in stdout and "run the same command again to continue" in stdout
    # base seed 1 is the calibration run (trained): scored past the deadline; base seed 2
    # starts and stops at its first checkpoint
    stopped = root / "study_horizon-tiny" / "base-seed2"
    assert info(stopped)["attempts"][0]["stopped"] == "part over" and not info(stopped).get("trained")
    stdout = main_job(root, "--study", "horizon", *LONG)
    assert "Loaded checkpoint" in (stopped / "train.stdout").read_text()
    assert len(info(stopped)["attempts"]) == 2 and info(stopped)["trained"]


def test_horizon_report_is_recomputed_from_the_runs(calibrated):
    root, _ = calibrated
    report = root / "runs" / "report"
    if not (report / "horizon.json").is_file():
        main_job(root, "--study", "horizon", *LONG)
    data = json.loads((report / "horizon.json").read_text())
    horizon = json.loads((report / "calibration.json").read_text())["horizon"]
    choice = json.loads((report / "guidance.json").read_text())["choice"]
    assert data["updates"] == horizon and data["guidance"] == choice["setting"]
    assert data["meta_lr"] == pytest.approx(choice["values"]["meta_lr"] * 12 / horizon)
    study = root / "study_horizon-tiny"
    arms = {"base": "base", "beta1": "beta1",
            "alpha+beta1 groups embed,encoder,decoder": "alpha+beta1-groups_embed_encoder_decoder"}
    calibration_run = root / "study_calibration-tiny" / "base-calibration-seed1"
    raw = root / "data" / "raw"
    for subset in ("test", "test_debian"):
        entry = data["table"]["subsets"][subset]
        for arm, name in arms.items():
            runs = {s: (calibration_run if (arm, s) == ("base", 1) else study / f"{name}-seed{s}") for s in (1, 2)}
            key = "bleu" if subset == "test" else "bleu_test_debian"
            values = [info(r)[key] for r in runs.values()]
            assert entry["rows"][arm]["ci"] == pytest.approx(stats.mean_ci(values)["ci"])
            if arm != "base":
                for s, r in runs.items():
                    base = calibration_run if s == 1 else study / f"base-seed{s}"
                    refs = lines(raw / f"{subset}.en")
                    p = stats.paired_bootstrap(lines(base / f"{subset}.hyp.en"), lines(r / f"{subset}.hyp.en"),
                                               refs)["p"]
                    assert entry["vs_base"][arm]["per_seed"][str(s)]["p"] == pytest.approx(p)
            for r in runs.values():
                assert int(log_rows(r / "train.log", "train_inner")[-1]["num_updates"]) == horizon
    groups = info(study / "alpha+beta1-groups_embed_encoder_decoder-seed2")["overrides"]
    assert r"optimizer.guided_groups=embed\,encoder\,decoder" in " ".join(groups)
    with open(report / "horizon_curves.csv") as f:
        points = list(csv.DictReader(f))
    for r in data["curves"]:
        valid = [(int(v["num_updates"]), float(v["bleu"])) for v in log_rows(Path(r["run"]) / "train.log", "valid")]
        mine = [(int(p["update"]), float(p["valid_bleu"])) for p in points
                if p["arm"] == r["arm"] and int(p["seed"]) == r["seed"]]
        assert mine == valid and len(valid) == horizon // 2
        assert all(p["wall"] is not None for p in r["points"])
    assert (report / "horizon_bleu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["arm"] for r in data["side_by_side"]] == list(arms)
    findings = (report / "findings.md").read_text()
    assert "**Claim 1 at the plateau**" in findings and f"at {horizon} updates" in findings


def test_no_guidance_choice_until_every_guided_setting_has_every_seed(tmp_path):
    """A mean over fewer seeds is not compared with one over all of them (a part can end
    with a setting half done)."""
    from guided_recipes.run import horizon
    from guided_recipes.run.studies import Setting

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "test.en").write_text("a b c d\ne f g h\n")

    def scored(name, seed, bleu, valid=None):
        folder = tmp_path / f"{name}-seed{seed}"
        folder.mkdir()
        (folder / "test.hyp.en").write_text("a b c d\ne f g h\n")
        (folder / "run.json").write_text(json.dumps({"bleu": bleu, "train_seconds": 1.0,
                                                     **({"bleu_valid": valid} if valid is not None else {})}))
        return folder

    base = Setting("base", "guidance", "base", {})
    a, b = (Setting(n, "guidance", "beta1", {"meta_lr": lr}) for n, lr in (("a", 1.0), ("b", 2.0)))
    plan = [(base, 1, scored("base", 1, 10.0)), (base, 2, scored("base", 2, 11.0)),
            (a, 1, scored("a", 1, 10.0, 20.0)), (a, 2, scored("a", 2, 10.0, 20.0)),
            (b, 1, scored("b", 1, 10.0, 30.0)), (b, 2, tmp_path / "b-seed2-untrained")]
    data = horizon.guidance_report(plan, raw, "en")
    assert data["choice"] is None and data["pending"] == ["b (1 seed(s))"]
    assert "No choice yet" in horizon.guidance_markdown(data)
    plan[-1] = (b, 2, scored("b", 2, 10.0, 25.0))
    data = horizon.guidance_report(plan, raw, "en")
    assert data["choice"]["setting"] == "b" and data["choice"]["valid_mean"] == 27.5 and data["pending"] == []
