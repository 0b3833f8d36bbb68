"""The sweep of issue 13 on the tiny preset: a 2-trial TPE study of the base recipe through
fairseq's hydra entry point (guided_recipes.hydra_objective) and hydra-optuna-sweeper with a
SQLite storage, killed (SIGKILL of the whole sweep) while its second trial trains, then
resumed with the same command (on the joblib launcher), then called a third time. Checked
against the study itself, each trial's own record and fairseq's training log."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import optuna
import pytest
from optuna.trial import TrialState

from conftest import ENV, REPO, json_logs

from guided_recipes.run import sweep_study

JOB_LOG = "hydra_objective.log"  # hydra's log of a job, named after the entry point


def sweep(data, out, *extra):
    return [sys.executable, str(REPO / "scripts" / "sweep.py"), "--preset", "tiny", "--rows", "base-bo",
            "--trials", "2", "--startup-trials", "1", "--data", str(data), "--raw", str(data.parent),
            "--out", str(out), "--quiet", *extra]


def study_of(out):
    return optuna.load_study(study_name="base-bo", storage=f"sqlite:///{out / 'optuna.db'}")


def kill_during_second_trial(cmd, out, limit=240):
    """Start the sweep in its own process group; SIGKILL the group once trial 0 is complete
    in the study and trial 1's run has begun training. The group is stopped (SIGSTOP) the
    moment trial 1's first update is logged, before the study is read: on a loaded machine
    reading the study took long enough for the tiny trial to finish in between."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    deadline = time.time() + limit
    try:
        while time.time() < deadline:
            assert proc.poll() is None, "the sweep ended before it was killed:\n" + proc.stdout.read()[-3000:]
            second = out / "base-bo" / "trials" / "launch0" / "1" / JOB_LOG
            if second.is_file() and "[train_inner]" in second.read_text():
                os.killpg(proc.pid, signal.SIGSTOP)
                states = [t.state for t in study_of(out).trials]
                assert states == [TrialState.COMPLETE, TrialState.RUNNING], states
                return
            time.sleep(0.1)
        pytest.fail("the second trial did not start training in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def saved_valid_bleu(run: Path) -> float:
    """BLEU of the last validation in fairseq's log of a run (hydra's job log): on the tiny
    preset the only validation at which fairseq saves a checkpoint, so the best it tracks."""
    text = (run / JOB_LOG).read_text().replace("][valid][INFO] - ", " | valid | ")
    return float(json_logs(text, tag="valid")[-1]["valid_bleu"])


def test_the_objective_is_fairseqs_best_validation_not_a_pooled_value(tiny_corpus, tmp_path):
    """The tiny preset validates at updates 6 and 12 and saves a checkpoint at 12 only, so
    fairseq's best (what checkpoint_best.pt is chosen by) is update 12's validation loss. The
    sweeper must get that, not what fairseq's _hydra_main returns: one value over both
    validations pooled (with BLEU, the first CPU sweep got 8.93 for a run whose validations
    scored 4.41 and 13.01; tiny runs score BLEU 0, so the loss shows it here)."""
    out = tmp_path / "out"
    done = subprocess.run(sweep(tiny_corpus, out, "--objective", "loss", "--no-test", "--trials", "1"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert done.returncode == 0, done.stdout[-4000:]
    run = out / "base-bo" / "trials" / "launch0" / "0"
    text = (run / JOB_LOG).read_text().replace("][valid][INFO] - ", " | valid | ")
    validations = json_logs(text, tag="valid")
    losses = [float(v["valid_loss"]) for v in validations]
    assert [int(v["valid_num_updates"]) for v in validations] == [6, 12] and abs(losses[0] - losses[1]) > 0.01
    rec = json.loads((run / sweep_study.RECORD).read_text())
    assert rec["metric"] == "loss" and rec["maximize"] is False
    assert rec["objective"] == pytest.approx(losses[1], abs=1e-3) and study_of(out).trials[0].value == rec["objective"]


def test_the_objective_is_the_best_validation_when_the_last_one_is_worse(tiny_corpus, tmp_path):
    """The cpu and gpu presets save a checkpoint at every validation, so fairseq's best
    is the best of them, which need not be the last. Here the tiny preset saves at both of
    its validations (6 and 12), and the trial's lr (LAMB at ~1, 100x the preset's) makes
    the model diverge after the first: update 6's validation loss is the best, update 12's
    far worse. The study gets update 6's (the one checkpoint_best.pt holds), not the last."""
    import copy
    import dataclasses

    from guided_recipes.report import sweep_report
    from guided_recipes.run import nmt

    tiny = nmt.PRESETS["tiny"]
    config = copy.deepcopy(tiny.config)
    config["checkpoint"]["save_interval_updates"] = 6
    study = sweep_study.Study("base-bo", "base", ("static.lr=tag(log, interval(1.0, 1.01))",), 1, "tpe")
    out = tmp_path / "out"
    trials = sweep_study.run(study, out / "base-bo", f"sqlite:///{out / 'optuna.db'}",
                             dataclasses.replace(tiny, config=config), tiny_corpus, "loss", 1, "basic", 1, 1,
                             echo=False)
    run = out / "base-bo" / "trials" / "launch0" / "0"
    text = (run / JOB_LOG).read_text().replace("][valid][INFO] - ", " | valid | ")
    validations = json_logs(text, tag="valid")
    losses = [float(v["valid_loss"]) for v in validations]
    assert [int(v["valid_num_updates"]) for v in validations] == [6, 12]
    assert losses[1] > losses[0] + 1, losses  # the last validation is the worse one
    assert [t["state"] for t in trials] == ["COMPLETE"]
    assert trials[0]["objective"] == pytest.approx(losses[0], abs=1e-3)
    assert study_of(out).trials[0].value == trials[0]["objective"]
    assert sweep_report.selected(trials, maximize=False)["objective"] == pytest.approx(losses[0], abs=1e-3)


@pytest.fixture(scope="module")
def resumed(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    kill_during_second_trial(sweep(tiny_corpus, out), out)
    first = [t.value for t in study_of(out).trials]
    t0 = time.time()
    second = subprocess.run(sweep(tiny_corpus, out, "--parallel", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    assert second.returncode == 0, second.stdout[-4000:]
    third = subprocess.run(sweep(tiny_corpus, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=ENV)
    assert third.returncode == 0, third.stdout[-4000:]
    return out, first, second.stdout, third.stdout, time.time() - t0


def test_the_objective_reached_the_sweeper(resumed):
    out, first, _, _, _ = resumed
    records = sweep_study.records(out / "base-bo")
    study = study_of(out)
    assert first[0] is not None and first[1] is None  # trial 0 told before the kill; trial 1 was running
    for trial in (t for t in study.trials if t.state == TrialState.COMPLETE):
        rec = sweep_study.record_of(trial, records)
        # the sweeper stored what fairseq's run found: its best validation BLEU, from its own log
        assert trial.value == rec["objective"] == pytest.approx(saved_valid_bleu(Path(rec["run"])), abs=1e-3)
        assert rec["metric"] == "bleu" and rec["maximize"] and rec["wall_seconds"] > 0
        # the searched static values went into fairseq's config of that run
        cfg = (Path(rec["run"]) / ".hydra" / "overrides.yaml").read_text()
        assert f"static.lr={trial.params['static.lr']}" in cfg
        assert rec["static"] == {"lr": trial.params["static.lr"], "beta1": trial.params["static.beta1"]}


def test_the_sqlite_study_has_two_completed_trials_and_the_interrupted_one_failed(resumed):
    out, _, second, _, _ = resumed
    study = study_of(out)
    states = [(t.number, t.state) for t in study.trials]
    assert states == [(0, TrialState.COMPLETE), (1, TrialState.FAIL), (2, TrialState.COMPLETE)]
    assert study.trials[1].user_attrs == {"interrupted": True}
    assert "trial 1 was interrupted: marked failed, not counted" in second
    assert "1 of 2 trials done; running 1" in second


def test_the_resumed_sweep_repeated_no_finished_trial(resumed):
    out, _, _, third, _ = resumed
    study = study_of(out)
    records = sweep_study.records(out / "base-bo")
    # three runs started in all: trial 0, the killed trial 1 (no record), trial 2 (launch 1)
    runs = sorted(p.relative_to(out / "base-bo" / "trials").as_posix()
                  for p in (out / "base-bo" / "trials").glob("launch*/*") if p.is_dir())
    assert runs == ["launch0/0", "launch0/1", "launch1/0"]
    assert [r["run"].split("trials/")[1] for r in records] == ["launch0/0", "launch1/0"]
    assert study.trials[0].params != study.trials[2].params  # TPE's seed moved on: no redrawn start-up point
    # the third call found both trials done and ran nothing
    assert "base-bo: all 2 trials done" in third and "running" not in third
    assert not (out / "base-bo" / "trials" / "launch2").exists()
    commands = (out / "base-bo" / "commands.sh").read_text()
    assert commands.count("hydra/sweeper=optuna") == 2 and "hydra/launcher=joblib" in commands


def test_table2_and_plot_are_computed_from_the_trials(resumed):
    out, _, _, _, _ = resumed
    report = json.loads((out / "report" / "table2.json").read_text())
    records = {r["run"]: r for r in sweep_study.records(out / "base-bo")}
    (row,) = report["rows"]
    assert row["row"] == "base-bo" and row["completed"] == 2 and row["trials"] == 2
    assert row["wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in records.values()), abs=0.1)
    best = max(records.values(), key=lambda r: r["objective"])
    assert row["valid"] == best["objective"]
    assert row["test_bleu"] == json.loads((Path(row["selected"]["run"]) / "run.json").read_text())["bleu"]
    walls = [records[r]["wall_seconds"] for r in sorted(records)]  # trial 0, then trial 2
    assert [p[0] for p in row["curve"]] == pytest.approx([walls[0], walls[0] + walls[1]], abs=0.1)
    assert [p[1] for p in row["curve"]] == [records[sorted(records)[0]]["objective"], best["objective"]]
    image = matplotlib.image.imread(out / "report" / "bo_vs_guided.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert "| base, static values by BO (TPE) | 2 of 2 |" in (out / "report" / "table2.md").read_text()


def test_bad_flags_stop_before_training(tmp_path):
    for flags, message in [(["--rows", "base,alpha"], "--rows: unknown"), (["--lr-range", "3,1"], "LOW < HIGH"),
                           (["--beta1-range", "0.5,1.5"], "[0, 1)"), (["--trials", "0"], "--trials must be"),
                           (["--hydra", "optimization.lr=[1]"], "only hydra's own settings")]:
        out = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), *flags, "--out", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        assert out.returncode == 2 and message in out.stdout, out.stdout
    assert not any(tmp_path.iterdir())


def test_an_interrupted_grid_point_is_run_again(tmp_path, caplog):
    """GridSampler counts a failed trial's point as visited; a trial settled as interrupted
    is not, so the resumed grid evaluates it rather than re-evaluating another."""
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    study = optuna.create_study(study_name="g", storage=storage, sampler=optuna.samplers.GridSampler({"x": [1.0]}))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 2.0)
    (tmp_path / "trials").mkdir()
    assert sweep_study.settle_interrupted(study, tmp_path) == ["trial 0 was interrupted: marked failed, not counted"]
    assert sweep_study.counted(study) == []
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="optuna"):
            again = study.ask()
            assert again.suggest_float("x", 0.0, 2.0) == 1.0
    finally:
        optuna.logging.disable_propagation()
    assert "grid has been exhausted" not in caplog.text


def test_each_row_is_compared_with_bos_selected_model_by_sacrebleus_paired_bootstrap(tmp_path):
    """vs_bo of a row is its test BLEU minus BO's with the p of `sacrebleu --paired-bs` run on
    the two selected runs' outputs (BO as the baseline); rows without a test score get none."""
    from conftest import BIN

    from guided_recipes.report import sweep_report

    words = "the a house cat runs over under green small big old tree river stone light".split()
    refs = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6 + i % 5)) for i in range(80)]
    (tmp_path / "test.en").write_text("\n".join(refs) + "\n")
    rows = []
    for name, drop in (("base-bo", 3), ("beta1", 5), ("alpha+beta1", None)):
        run = tmp_path / name
        run.mkdir()
        hyps = [" ".join(w for j, w in enumerate(r.split()) if drop is None or j % drop != 1) for r in refs]
        (run / "test.hyp.en").write_text("\n".join(hyps) + "\n")
        bleu = None if drop is None else sacrebleu_score(hyps, refs)
        rows.append({"row": name, "test_bleu": bleu, "selected": {"run": str(run), "params": {}}})
    sweep_report.versus_bo(rows, tmp_path / "test.en", "test.hyp.en")
    assert "vs_bo" not in rows[0] and "vs_bo" not in rows[2]
    cli = subprocess.run([str(BIN / "sacrebleu"), str(tmp_path / "test.en"), "-i", str(tmp_path / "base-bo" / "test.hyp.en"),
                          str(tmp_path / "beta1" / "test.hyp.en"), "-m", "bleu", "--paired-bs", "-f", "json"],
                         stdout=subprocess.PIPE, text=True, env=ENV)
    system = json.loads(cli.stdout)[1]["BLEU"]
    assert rows[1]["vs_bo"]["delta"] == pytest.approx(rows[1]["test_bleu"] - rows[0]["test_bleu"])
    assert rows[1]["vs_bo"]["delta"] > 5 and rows[1]["vs_bo"]["p"] == pytest.approx(system["p_value"])
    table = sweep_report.markdown([dict(r, label=r["row"], trials=1, completed=1, wall_seconds=60, valid=None)
                                   for r in rows], "bleu")
    assert f"| {rows[1]['vs_bo']['delta']:+.2f} (p {system['p_value']:.3f}) |" in table


def sacrebleu_score(hyps, refs):
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score
