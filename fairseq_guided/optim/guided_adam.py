"""`--optimizer guided_adam`: fairseq's Adam (AdamW-style weight decay) with learned
alpha / beta1 / beta2 / eps / weight decay.

The update and its derivative: hypergrad/adam.py, held to hypergrad/adam_reference.py.
"""
from dataclasses import dataclass, field
from typing import List

from fairseq.optim import register_optimizer
from omegaconf import II

from ..flags import parse_float_tuple
from ..hypergrad.adam import GuidedAdam
from .guided_base import GuidedFairseqOptimizer, GuidedHyperConfig


@dataclass
class GuidedAdamConfig(GuidedHyperConfig):
    adam_betas: str = field(
        default="(0.9, 0.999)", metadata={"help": "betas for Adam (initial values where learned)"}
    )
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for Adam; > 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay; >= 0"})
    lr: List[float] = II("optimization.lr")


@register_optimizer("guided_adam", dataclass=GuidedAdamConfig)
class GuidedFairseqAdam(GuidedFairseqOptimizer):
    torch_class = GuidedAdam
    name = "guided_adam"
    betas_flag, eps_flag = "--adam-betas", "--adam-eps"

    @property
    def optimizer_config(self):
        beta1, beta2 = parse_float_tuple(self.cfg.adam_betas, "--adam-betas", 2)
        return {"lr": self.cfg.lr[0], "beta1": beta1, "beta2": beta2, "eps": self.cfg.adam_eps,
                "weight_decay": self.cfg.weight_decay}

    def validate(self, fixed):
        for key in ("beta1", "beta2"):
            if not 0 <= fixed[key] < 1:
                raise ValueError(f"{self.betas_flag}: each beta must be in [0, 1); got "
                                 f"({fixed['beta1']}, {fixed['beta2']})")
        if not fixed["eps"] > 0:
            raise ValueError(f"{self.eps_flag} must be > 0; got {fixed['eps']}")
        if not fixed["weight_decay"] >= 0:
            raise ValueError(f"--weight-decay must be >= 0; got {fixed['weight_decay']}")
