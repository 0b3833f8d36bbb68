"""fairseq-hydra-train for sweeps: fairseq's own hydra entry point with the objective
returned to the sweeper, and each trial's wall time recorded.

    python -m guided_recipes.run.hydra_objective --multirun --config-dir D --config-name N OVERRIDES

Why not fairseq-hydra-train itself: in fairseq 0.12.3.1 `fairseq_cli.hydra_train.hydra_main`
calls `_hydra_main(cfg)` without returning its value, so a sweeper gets None for every trial
(hydra-optuna-sweeper marks each one failed); and the value `_hydra_main` computes is the
"valid" metrics aggregator's smoothed value, one value over all the run's validations pooled
(the loss averaged, BLEU from the pooled counts), not the best. This entry point calls the
same `_hydra_main` on the same config (fairseq's own schema and config search path) and returns fairseq's best
validation metric, `checkpoint_utils.save_checkpoint.best`: the value of
`checkpoint.best_checkpoint_metric` (e.g. bleu with task.eval_bleu) over the run's
validations, the one fairseq's checkpoint_best.pt is chosen by.

Static values a sweep searches that fairseq keeps inside a string (`lamb_betas` / `adam_betas`
'(b1, b2)') or a list (`optimization.lr`) are plain floats under `static.` here; each one set
replaces its part of the fairseq value before training, and the `static` node is removed.
"""
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from fairseq import checkpoint_utils
from fairseq.dataclass.configs import FairseqConfig
from fairseq.dataclass.initialize import hydra_init
from fairseq.dataclass.utils import omegaconf_no_object_check
from fairseq_cli import hydra_train

from .sweep_study import RECORD
BETAS_FIELDS = ("lamb_betas", "adam_betas")


@dataclass
class StaticValues:
    lr: Optional[float] = field(default=None, metadata={"help": "peak lr: replaces optimization.lr"})
    beta1: Optional[float] = field(default=None, metadata={"help": "replaces the first of the optimizer's betas"})
    beta2: Optional[float] = field(default=None, metadata={"help": "replaces the second of the optimizer's betas"})


@dataclass
class SweepConfig(FairseqConfig):
    static: StaticValues = field(default_factory=StaticValues,
                                 metadata={"help": "static values searched by a sweep (see module doc)"})


def apply_static(cfg):
    """Write cfg.static's values into fairseq's own fields; return fairseq's config without
    the `static` node (a plain copy, as fairseq's _hydra_main makes) and {name: value} applied."""
    static = {k: v for k, v in (cfg.get("static") or {}).items() if v is not None}
    if "lr" in static:
        if not static["lr"] > 0:
            raise ValueError(f"static.lr={static['lr']} must be > 0")
        cfg.optimization.lr = [float(static["lr"])]
    if "beta1" in static or "beta2" in static:
        name = next((n for n in BETAS_FIELDS if n in cfg.optimizer), None)
        if name is None:
            raise ValueError(f"static.beta1/beta2: optimizer {cfg.optimizer._name} has none of {BETAS_FIELDS}")
        betas = [float(x) for x in str(cfg.optimizer[name]).strip("()[] ").split(",")]
        for i, key in enumerate(("beta1", "beta2")):
            if key in static:
                if not 0 <= static[key] < 1:
                    raise ValueError(f"static.{key}={static[key]} must be in [0, 1)")
                betas[i] = float(static[key])
        cfg.optimizer[name] = f"({betas[0]!r}, {betas[1]!r})"
    with omegaconf_no_object_check():  # interpolations (hydra's output folder) resolve in _hydra_main
        plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True))
    plain.pop("static", None)
    return plain, static


def _trial_overrides() -> list:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@hydra.main(config_path="pkg://fairseq.config", config_name="config", version_base="1.1")
def hydra_main(cfg) -> float:
    """One trial: train, then return the best validation metric (and record it)."""
    out = os.getcwd()  # version_base 1.1, as fairseq's: hydra runs each job in its output folder
    record = {"overrides": _trial_overrides(), "status": "running", "started": time.time()}
    train_logger = logging.getLogger("fairseq_cli.train")
    handlers = list(train_logger.handlers)
    if hasattr(checkpoint_utils.save_checkpoint, "best"):  # left by the previous trial of this process
        del checkpoint_utils.save_checkpoint.best
    try:
        cfg, record["static"] = apply_static(cfg)
        record["metric"] = cfg.checkpoint.best_checkpoint_metric
        record["maximize"] = bool(cfg.checkpoint.maximize_best_checkpoint_metric)
        hydra_train._hydra_main(cfg)
        # not _hydra_main's value: with task.eval_bleu the "valid" aggregator does fill, and
        # its BLEU pools the counts of every validation of the run (8.93 for a run whose
        # validations scored 4.41 and 13.01), which is neither the best nor the last
        value = getattr(checkpoint_utils.save_checkpoint, "best", None)
        if value is None:
            raise RuntimeError(f"no validation of {record['metric']} ran: nothing to return to the sweeper "
                               "(set dataset.validate_interval_updates)")
        record.update(status="finished", objective=float(value))
        return float(value)
    except BaseException as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        record["finished"] = time.time()
        record["wall_seconds"] = round(record["finished"] - record["started"], 2)
        with open(os.path.join(out, RECORD), "w") as f:
            json.dump(record, f, indent=1)
        for handler in train_logger.handlers[len(handlers):]:  # fairseq adds a log-file handler per run
            train_logger.removeHandler(handler)
            handler.close()


def cli_main():
    from hydra._internal.utils import get_args

    cfg_name = get_args().config_name or "config"
    hydra_init(cfg_name)  # fairseq's: its dataclasses in hydra's ConfigStore
    ConfigStore.instance().store(name=cfg_name, node=SweepConfig)  # the same schema, plus `static`
    hydra_main()


if __name__ == "__main__":
    cli_main()
