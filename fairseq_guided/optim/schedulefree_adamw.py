"""`--optimizer schedulefree_adamw`: the `schedulefree` package's AdamWScheduleFree
(Defazio et al. 2024) as a fairseq optimizer, unchanged.

Defaults are the package's; fairseq's global --lr defaults to 0.25, so pass the package's
--lr 0.0025 (and keep fairseq's default --lr-scheduler fixed: schedule-free replaces the
schedule; warm-up is --schedulefree-warmup-steps).

Evaluation and checkpoints must see the averaged weights x, training the gradient point y.
How `optimizer.eval()` / `.train()` are called for any task, stock ones included, is in
model_mode_link.py: the model's train()/eval() calls (made by fairseq's trainer around
training and validation forwards) and its state_dict() (checkpoint saves) drive the switch;
state_dict() of this optimizer switches to eval too, so the saved pair is consistent in
either order.

The update is elementwise given a few scalars per group (bias correction and the averaging
weight), so fairseq's flat fp32 master of --fp16 is updated exactly as per-tensor masters.
"""
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II
from schedulefree import AdamWScheduleFree

from .model_mode_link import ModelModeLink
from .tuning_free_checks import check, check_betas, check_lr


@dataclass
class ScheduleFreeAdamWConfig(FairseqDataclass):
    schedulefree_betas: str = field(
        default="(0.9, 0.999)", metadata={"help": "betas: beta1 is the interpolation between the "
                                          "average and the gradient point, in (0, 1); beta2 the "
                                          "second-moment decay, in [0, 1)"})
    schedulefree_eps: float = field(default=1e-8, metadata={"help": "epsilon added to the "
                                                             "denominator; > 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay, taken at the "
                                                       "gradient point y; >= 0"})
    schedulefree_warmup_steps: int = field(default=0, metadata={"help": "linear lr warm-up over "
                                                                "this many updates; >= 0"})
    schedulefree_r: float = field(default=0.0, metadata={"help": "polynomial weighting power of "
                                                         "the average; >= 0"})
    schedulefree_weight_lr_power: float = field(
        default=2.0, metadata={"help": "the average weights each step by (max lr so far) to this "
                               "power (matters during warm-up); >= 0"})
    schedulefree_no_foreach: bool = field(
        default=False, metadata={"help": "update each tensor with its own kernels instead of the "
                                 "package's foreach kernels (the default)"})
    lr: List[float] = II("optimization.lr")


@register_optimizer("schedulefree_adamw", dataclass=ScheduleFreeAdamWConfig)
class FairseqScheduleFreeAdamW(FairseqOptimizer):
    def __init__(self, cfg, params):
        super().__init__(cfg)
        self._optimizer = AdamWScheduleFree(params, **self.optimizer_config)
        self.mode_link = ModelModeLink(self._optimizer)

    @property
    def optimizer_config(self):
        cfg = self.cfg
        return {
            "lr": check_lr(cfg.lr, "schedulefree_adamw (the package's default is 0.0025)"),
            "betas": check_betas(cfg.schedulefree_betas, "--schedulefree-betas", beta1_min_open=True),
            "eps": check(cfg.schedulefree_eps, cfg.schedulefree_eps > 0, "--schedulefree-eps", "> 0"),
            "weight_decay": check(cfg.weight_decay, cfg.weight_decay >= 0, "--weight-decay", ">= 0"),
            "warmup_steps": check(cfg.schedulefree_warmup_steps, cfg.schedulefree_warmup_steps >= 0,
                                  "--schedulefree-warmup-steps", "an integer >= 0"),
            "r": check(cfg.schedulefree_r, cfg.schedulefree_r >= 0, "--schedulefree-r", ">= 0"),
            "weight_lr_power": check(cfg.schedulefree_weight_lr_power, cfg.schedulefree_weight_lr_power >= 0,
                                     "--schedulefree-weight-lr-power", ">= 0"),
            "foreach": not cfg.schedulefree_no_foreach and hasattr(torch, "_foreach_mul_"),
        }

    @property
    def supports_flat_params(self):
        return True

    def train(self):
        """Parameters to the gradient point y (what training steps need)."""
        self.mode_link.train()

    def eval(self):
        """Parameters to the average x (what evaluation and checkpoints need)."""
        self.mode_link.eval()

    def state_dict(self):
        self.eval()
        return super().state_dict()
