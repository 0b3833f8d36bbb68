"""`--optimizer guided_adafactor`: fairseq's Adafactor with an explicit lr schedule and
learned alpha / beta1 / weight decay.

One deliberate difference: with --scale-parameter, fairseq's stock Adafactor writes each
tensor's scaled lr back into the param group, so later tensors in the same step get the
scales of earlier ones multiplied in. Here each tensor's lr is scaled by its own RMS, as
in the Adafactor paper. Without --scale-parameter (the default) the two agree exactly.
There is no --relative-step: alpha scales fairseq's lr schedule instead.

The update and its derivative: hypergrad/adafactor.py, held to hypergrad/adafactor_reference.py.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.optim import register_optimizer
from omegaconf import II

from ..flags import parse_float_tuple
from ..hypergrad.adafactor import GuidedAdafactor
from .guided_base import GuidedFairseqOptimizer, GuidedHyperConfig


@dataclass
class GuidedAdafactorConfig(GuidedHyperConfig):
    adafactor_eps: str = field(
        default="(1e-30, 1e-3)", metadata={"help": "epsilons: added to squared gradients, and "
                                           "the floor of the parameter scale; eps1 > 0, eps2 >= 0"}
    )
    clip_threshold: float = field(
        default=1.0, metadata={"help": "threshold for clipping the update's root mean square; > 0"}
    )
    decay_rate: float = field(
        default=-0.8, metadata={"help": "decay rate of the second-moment estimator; < 0"}
    )
    beta1: Optional[float] = field(
        default=None, metadata={"help": "first-moment coefficient (none: no first moment); "
                                "needed, as the initial value, when beta1 is learned"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay; >= 0"})
    scale_parameter: bool = field(
        default=False, metadata={"help": "scale each tensor's lr by its root mean square"}
    )
    lr: List[float] = II("optimization.lr")


@register_optimizer("guided_adafactor", dataclass=GuidedAdafactorConfig)
class GuidedFairseqAdafactor(GuidedFairseqOptimizer):
    torch_class = GuidedAdafactor
    name = "guided_adafactor"

    @property
    def optimizer_config(self):
        eps1, eps2 = parse_float_tuple(self.cfg.adafactor_eps, "--adafactor-eps", 2)
        return {"lr": self.cfg.lr[0], "beta1": self.cfg.beta1, "weight_decay": self.cfg.weight_decay,
                "eps1": eps1, "eps2": eps2, "clip_threshold": self.cfg.clip_threshold,
                "decay_rate": self.cfg.decay_rate, "scale_parameter": self.cfg.scale_parameter}

    def validate(self, fixed):
        if fixed["beta1"] is not None and not 0 <= fixed["beta1"] < 1:
            raise ValueError(f"--beta1 must be in [0, 1); got {fixed['beta1']}")
        # eps1 is added to squared gradients whose rows may be all zero: 0 or less gives inf or NaN
        if not 0 < fixed["eps1"] < math.inf or not 0 <= fixed["eps2"] < math.inf:
            raise ValueError(f"--adafactor-eps: eps1 must be > 0 and eps2 >= 0, both finite; "
                             f"got ({fixed['eps1']}, {fixed['eps2']})")
        if not fixed["clip_threshold"] > 0:
            raise ValueError(f"--clip-threshold must be > 0; got {fixed['clip_threshold']}")
        if not fixed["decay_rate"] < 0:
            raise ValueError(f"--decay-rate must be < 0; got {fixed['decay_rate']}")
        if not fixed["weight_decay"] >= 0:
            raise ValueError(f"--weight-decay must be >= 0; got {fixed['weight_decay']}")
