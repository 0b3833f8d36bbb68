"""One Optuna study of NMT runs through fairseq's hydra entry point:
`python -m guided_recipes.run.hydra_objective --multirun` with hydra-optuna-sweeper (TPE, or a
grid), trials through a hydra launcher (basic, joblib, or submitit on Slurm), the study in an
Optuna storage (a SQLite file by default).

Resumable: before a sweep, a trial left running by an interrupted sweep is told its value
when its run had finished (its objective.json), otherwise marked failed and flagged
`interrupted` (it is not counted); the sweep then asks only for the trials still missing, so
a finished trial is never run again. TPE's seed is offset by the trials already in the study,
so a resumed sweep does not redraw the first sweep's random start-up points.
"""
import fcntl
import json
import shlex
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import nmt
from ..common import run_logged

RECORD = "objective.json"  # each trial's own record, written by hydra_objective into its run folder


@dataclass(frozen=True)
class Study:
    name: str  # the study's name in the storage, and its folder
    variant: str  # a key of nmt.VARIANTS
    search: tuple  # hydra sweep overrides ('key=interval(a, b)', ...); () for a single run
    trials: int  # trials to complete
    sampler: str = "tpe"  # tpe | grid


def training_config(preset, data: Path, variant: str, objective: str, seed: int) -> dict:
    """The preset's fairseq config with the corpus, variant and objective filled in: what
    every trial of a study shares (written as the study's config/train.yaml)."""
    cfg = json.loads(json.dumps(preset.config))  # a deep copy
    src, tgt = nmt.language_pair(data)
    cfg["common"].update(user_dir=str(nmt.PLUGIN), seed=seed, log_file="${hydra:runtime.output_dir}/train.log")
    cfg["task"].update(data=str(Path(data).resolve()), source_lang=src, target_lang=tgt)
    cfg["optimizer"]["guided_hparams"] = nmt.VARIANTS[variant]
    cfg["checkpoint"]["save_dir"] = "${hydra:runtime.output_dir}/checkpoints"
    if objective == "bleu":  # fairseq's --eval-bleu: beam 4, sentencepiece removed, sacrebleu 13a
        cfg["task"].update(eval_bleu=True, eval_bleu_args='{"beam": 4, "max_len_a": 1.2, "max_len_b": 10}',
                           eval_bleu_remove_bpe="sentencepiece", eval_bleu_detok="space")
        cfg["checkpoint"].update(best_checkpoint_metric="bleu", maximize_best_checkpoint_metric=True)
    else:
        cfg["checkpoint"].update(best_checkpoint_metric="loss", maximize_best_checkpoint_metric=False)
    return cfg


def sweep_command(study: Study, folder: Path, storage: str, seed: int, to_run: int, launch: int,
                  launcher: str, parallel: int, startup_trials: int, maximize: bool, extra=()) -> list:
    """The fairseq hydra multirun that asks Optuna for `to_run` more trials."""
    cmd = [sys.executable, "-m", "guided_recipes.run.hydra_objective", "--multirun",
           "--config-dir", str(folder / "config"), "--config-name", "train",
           "hydra/sweeper=optuna", f"hydra/sweeper/sampler={study.sampler}", f"hydra/launcher={launcher}",
           f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study.name}",
           f"hydra.sweeper.direction={'maximize' if maximize else 'minimize'}",
           f"hydra.sweeper.n_trials={to_run}", f"hydra.sweeper.n_jobs={parallel}",
           # a diverged trial is a failed trial of the study, not the end of the sweep
           "hydra.sweeper.max_failure_rate=1.0",
           f"hydra.sweep.dir={folder / 'trials' / f'launch{launch}'}", "hydra.sweep.subdir=${hydra.job.num}"]
    if study.sampler == "tpe":
        cmd += [f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.sampler.n_startup_trials={startup_trials}"]
    if launcher == "joblib":
        cmd.append(f"hydra.launcher.n_jobs={parallel}")
    return cmd + list(extra) + list(study.search)


@contextmanager
def locked(folder: Path):
    """One sweep at a time on a study: settling a resumed study's running trials is safe only
    while no other sweep runs them."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "sweep.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"[sweep] another sweep is running on {folder} (sweep.lock is held)")
        yield


def load(storage: str, name: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study yet
        return None


def records(folder: Path) -> list:
    """Every trial run's objective.json in the study's folder, with its run folder."""
    rows = []
    for path in sorted((folder / "trials").glob(f"launch*/*/{RECORD}")):
        rows.append(dict(json.loads(path.read_text()), run=str(path.parent)))
    return rows


def _params_key(pairs) -> tuple:
    return tuple(sorted((str(k), str(v)) for k, v in pairs))


def record_of(trial, recs: list):
    """The finished run of an Optuna trial: its overrides are the trial's parameters."""
    key = _params_key(trial.params.items())
    found = [r for r in recs if r["status"] == "finished"
             and _params_key(o.split("=", 1) for o in r["overrides"]) == key]
    return found[-1] if found else None


def _tell(study, number: int, **kwargs):
    """study.tell; a GridSampler whose grid this trial completes calls study.stop(), which
    raises outside study.optimize after the trial is stored (the sweeper ignores it too)."""
    try:
        study.tell(number, **kwargs)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def settle_interrupted(study, folder: Path) -> list:
    """Tell or fail the trials an interrupted sweep left running; return what was done."""
    import optuna
    from optuna.trial import TrialState

    done, recs = [], records(folder)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        rec = record_of(frozen, recs)
        if rec is not None:
            _tell(study, frozen.number, values=[rec["objective"]])
            done.append(f"trial {frozen.number} had finished (objective {rec['objective']:.4g}): told")
            continue
        trial = optuna.trial.Trial(study, frozen._trial_id)  # (FrozenTrial keeps its storage id private)
        trial.set_user_attr("interrupted", True)
        if "grid_id" in frozen.system_attrs:  # GridSampler counts a failed trial's point as visited
            trial.set_system_attr("grid_id", -1)
        _tell(study, frozen.number, state=TrialState.FAIL)
        done.append(f"trial {frozen.number} was interrupted: marked failed, not counted")
    return done


def counted(study) -> list:
    """Trials that spent their budget: completed, or failed by themselves (not interrupted)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))]


def check_settings(folder: Path, settings: dict):
    """A study resumes only with the settings it was started with (its trial count may grow)."""
    path = folder / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            raise SystemExit(f"[sweep] {folder} was started with other settings ({', '.join(changed)}: "
                             f"{[old.get(k) for k in changed]} now {[settings.get(k) for k in changed]}); "
                             "use another --out or delete the folder")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def run(study: Study, folder: Path, storage: str, preset, data: Path, objective: str, seed: int,
        launcher: str, parallel: int, startup_trials: int, echo=True, extra=()) -> list:
    """Complete the study's trials (resuming); return its trials' rows (see rows())."""
    settings = {"variant": study.variant, "search": list(study.search), "sampler": study.sampler,
                "objective": objective, "seed": seed, "preset": preset.name, "data": str(Path(data).resolve())}
    with locked(folder):
        check_settings(folder, settings)
        (folder / "config").mkdir(exist_ok=True)
        (folder / "config" / "train.yaml").write_text(
            yaml.safe_dump(training_config(preset, data, study.variant, objective, seed), sort_keys=False))
        existing = load(storage, study.name)
        for line in settle_interrupted(existing, folder) if existing is not None else []:
            print(f"[sweep] {study.name}: {line}", flush=True)
        done = len(counted(existing)) if existing is not None else 0
        to_run = study.trials - done
        if to_run > 0:
            launch = len(list((folder / "trials").glob("launch*"))) if (folder / "trials").is_dir() else 0
            offset = len(existing.trials) if existing is not None else 0
            cmd = sweep_command(study, folder, storage, seed + offset, to_run, launch, launcher, parallel,
                                startup_trials, objective == "bleu", extra)
            print(f"[sweep] {study.name}: {done} of {study.trials} trials done; running {to_run}", flush=True)
            with open(folder / "commands.sh", "a") as f:
                f.write(f"# launch {launch}: {to_run} trials\n{shlex.join(cmd)}\n")
            run_logged(cmd, folder / f"launch{launch}.log", echo)
        else:
            print(f"[sweep] {study.name}: all {study.trials} trials done", flush=True)
        return rows(load(storage, study.name), folder)


def rows(study, folder: Path) -> list:
    """[{number, state, objective, params, wall_seconds, run}] of the study's counted trials,
    in trial order; wall_seconds from each run's own record (None where it has none)."""
    recs = records(folder)
    out = []
    for t in counted(study):
        rec = record_of(t, recs) if t.state.name == "COMPLETE" else None
        failed = [r for r in recs if r["status"] == "failed"
                  and _params_key(o.split("=", 1) for o in r["overrides"]) == _params_key(t.params.items())]
        rec = rec or (failed[-1] if failed else None)
        out.append({"number": t.number, "state": t.state.name, "objective": t.value, "params": dict(t.params),
                    "wall_seconds": rec["wall_seconds"] if rec else None, "run": rec["run"] if rec else None})
    return sorted(out, key=lambda r: r["number"])
