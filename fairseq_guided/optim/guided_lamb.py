"""`--optimizer guided_lamb`: LAMB (You et al. 2019) in pure torch (fairseq's own `lamb`
needs NVIDIA apex) with learned alpha / beta1 / beta2 / eps / weight decay.

The update and its derivative: hypergrad/lamb.py, held to hypergrad/lamb_reference.py.
"""
from dataclasses import dataclass, field
from typing import List

from fairseq.optim import register_optimizer
from omegaconf import II

from ..flags import parse_float_tuple
from ..hypergrad.lamb import GuidedLamb
from .guided_adam import GuidedFairseqAdam
from .guided_base import GuidedHyperConfig


@dataclass
class GuidedLambConfig(GuidedHyperConfig):
    lamb_betas: str = field(
        default="(0.9, 0.999)", metadata={"help": "betas for LAMB (initial values where learned)"}
    )
    lamb_eps: float = field(default=1e-6, metadata={"help": "epsilon for LAMB; > 0"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "weight decay, inside the trust-ratio update; >= 0"}
    )
    lr: List[float] = II("optimization.lr")


@register_optimizer("guided_lamb", dataclass=GuidedLambConfig)
class GuidedFairseqLamb(GuidedFairseqAdam):
    torch_class = GuidedLamb
    name = "guided_lamb"
    betas_flag, eps_flag = "--lamb-betas", "--lamb-eps"

    @property
    def optimizer_config(self):
        beta1, beta2 = parse_float_tuple(self.cfg.lamb_betas, "--lamb-betas", 2)
        return {"lr": self.cfg.lr[0], "beta1": beta1, "beta2": beta2, "eps": self.cfg.lamb_eps,
                "weight_decay": self.cfg.weight_decay}
