"""The paper's Figures 1 and 2 and an lr-sensitivity check, each a resumable study of its
own (`scripts/main_job.py --study schedules|lr-sensitivity`). Every setting is the preset's
config plus hydra overrides (nmt.train_command's `overrides`), one run folder a setting and
seed, named by the setting's values; a finished run is skipped.

  schedules        Fig. 2: guided beta1 from each initial value (lamb_betas' beta1) at each
                   of two meta lrs; Fig. 1: guided alpha at three meta lrs. Meta lrs are
                   multiples of the preset's guided_meta_lr. One seed by default (the
                   preset's first), as the paper's figures: 9 runs.
  lr-sensitivity   base vs alpha+beta1 at multiples of the preset's lr (and, with
                   --with-tuning-free, each tuning-free arm at the same multiples of its
                   own lr). The 1x runs are the main job's own (same config and seed) when
                   it has trained them.
  groups           beyond the paper: alpha+beta1 with one value per parameter group
                   (--guided-groups, default embed,encoder,decoder) against the same
                   variant's global values, the preset's seeds; the global runs are the
                   main job's own when it has trained them.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import nmt

STUDIES = ("schedules", "lr-sensitivity", "groups")
BUDGET_MINUTES = 90  # a study must fit a session beside the main job (issue 12)
DEFAULTS = {"beta1_inits": (0.5, 0.9, 0.99), "beta1_meta_lr_scales": (1.0, 3.0),
            "alpha_meta_lr_scales": (0.3, 1.0, 3.0), "lr_scales": (0.25, 1.0, 4.0)}


@dataclass(frozen=True)
class Setting:
    name: str  # the run folder's prefix, e.g. beta1-init0.5-metalr0.005
    figure: str  # fig1 | fig2 | lr
    variant: str
    values: dict  # what varies, e.g. {"beta1_init": 0.5, "meta_lr": 0.005}
    overrides: tuple = field(default=())


def _g(x) -> str:
    return f"{x:g}"


def preset_values(preset) -> dict:
    opt = preset.config["optimizer"]
    beta2 = float(str(opt.get("lamb_betas", "(0.9, 0.999)")).strip("()[] ").split(",")[1])
    return {"meta_lr": float(opt["guided_meta_lr"]), "lr": float(preset.config["optimization"]["lr"][0]),
            "beta2": beta2}


def schedules(preset, beta1_inits, beta1_meta_lr_scales, alpha_meta_lr_scales):
    base = preset_values(preset)
    out = []
    for scale in beta1_meta_lr_scales:
        meta = base["meta_lr"] * scale
        for init in beta1_inits:
            out.append(Setting(f"beta1-init{_g(init)}-metalr{_g(meta)}", "fig2", "beta1",
                               {"beta1_init": init, "meta_lr": meta, "meta_lr_scale": scale},
                               # quoted: hydra's grammar reads a bare (a,b) as a syntax error
                               (f"optimizer.lamb_betas='({_g(init)},{_g(base['beta2'])})'",
                                f"optimizer.guided_meta_lr={_g(meta)}")))
    for scale in alpha_meta_lr_scales:
        meta = base["meta_lr"] * scale
        out.append(Setting(f"alpha-metalr{_g(meta)}", "fig1", "alpha", {"meta_lr": meta, "meta_lr_scale": scale},
                           (f"optimizer.guided_meta_lr={_g(meta)}",)))
    return out


def lr_sensitivity(preset, lr_scales, tuning_free=False):
    lrs = {"base": preset_values(preset)["lr"]}
    lrs["alpha+beta1"] = lrs["base"]
    if tuning_free:
        lrs.update({arm: float(spec["lr"]) for arm, spec in nmt.TUNING_FREE.items()})
    return [Setting(f"{variant}-lr{_g(lr * scale)}", "lr", variant, {"lr": lr * scale, "lr_scale": scale},
                    () if scale == 1 else (f"optimization.lr=[{_g(lr * scale)}]",))
            for scale in lr_scales for variant, lr in lrs.items()]


def groups(preset, spec: str):
    """The global alpha+beta1 and the same with `--guided-groups spec`, paired by seed."""
    slug = "".join(c if c.isalnum() else "_" for c in spec)
    add = "" if "guided_groups" in preset.config["optimizer"] else "+"  # hydra: '+' adds a key the yaml lacks
    return [Setting("alpha+beta1", "groups", "alpha+beta1", {"groups": "global"}),
            # escaped: a bare comma is a hydra sweep
            Setting(f"alpha+beta1-groups_{slug}", "groups", "alpha+beta1", {"groups": spec},
                    (f"{add}optimizer.guided_groups=" + spec.replace(",", "\\,"),))]


def settings(study, preset, options, tuning_free=False) -> list:
    if study == "groups":
        return groups(preset, options["guided_groups"])
    if study == "schedules":
        return schedules(preset, options["beta1_inits"], options["beta1_meta_lr_scales"],
                         options["alpha_meta_lr_scales"])
    return lr_sensitivity(preset, options["lr_scales"], tuning_free)


def run_folder(runs: Path, setting: Setting, seed: int, main_runs: Path) -> Path:
    """The setting's folder; a setting without overrides is the main job's run when that
    one has finished training (the same command: training it twice would waste the time)."""
    if not setting.overrides:
        shared = main_runs / f"{setting.variant}-seed{seed}"
        if nmt.run_info(shared).get("trained") and not nmt.run_info(shared).get("overrides"):
            return shared
    return runs / f"{setting.name}-seed{seed}"


def estimate(main_report: Path, runs_to_train: int, evaluations: int) -> str:
    """A time estimate from the main job's measured stages (summary.json), if any."""
    summary = main_report / "summary.json"
    if not summary.is_file():
        return "no measured run time yet (the main job's summary.json gives one)"
    stages = json.loads(summary.read_text())["stage_seconds"]
    trains = [v for k, v in stages.items() if k.startswith("train ") and v > 60]  # skipped runs take ~0 s
    evals = [v for k, v in stages.items() if k.startswith("evaluate ") and k.endswith(" on test") and v > 1]
    if not trains:
        return "no measured run time yet (the main job's runs were all skipped in its last call)"
    per_train, per_eval = sum(trains) / len(trains), (sum(evals) / len(evals) if evals else 0)
    minutes = (runs_to_train * per_train + evaluations * per_eval) / 60
    return (f"about {minutes:.0f} min at the main job's measured {per_train:.0f} s a run and "
            f"{per_eval:.0f} s an evaluation"
            + (f"; over a study's {BUDGET_MINUTES}-minute budget: fewer --seeds or a smaller grid fit it"
               if minutes > BUDGET_MINUTES else ""))


def results(study, plan) -> list:
    """[{setting, figure, variant, values, seed, run, bleu}] for the report and findings."""
    rows = []
    for setting, seed, run in plan:
        info = nmt.run_info(run)
        rows.append({"setting": setting.name, "figure": setting.figure, "variant": setting.variant,
                     "values": setting.values, "seed": seed, "run": str(run), "bleu": info.get("bleu")})
    return rows
