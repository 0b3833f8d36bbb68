"""`--optimizer prodigy`: the `prodigyopt` package's Prodigy (Mishchenko & Defazio 2023)
as a fairseq optimizer, unchanged.

Defaults are the package's; fairseq's global --lr defaults to 0.25, so pass the package's
--lr 1.0 (Prodigy's lr multiplies its own estimated step size d; leave it at 1 unless
training is unstable) with fairseq's default --lr-scheduler fixed.

The update is elementwise given d; d comes from dot products and sums over all parameters,
which over fairseq's flat fp32 master of --fp16 are the same sums in another order (the
package itself declares flat params supported). With --prodigy-slice-p > 1 the every-p-th
subsample is taken along the flat buffer instead of each tensor. Under DDP every rank sees
the same all-reduced gradients and so computes the same d; fully sharded training would
need the package's fsdp_in_use, which is not exposed.

The estimate d and the step it gives (eff_lr = d * the scheduled lr) are logged through
fairseq.metrics each update, so a stalled d shows on the progress bar and in TensorBoard.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq import metrics
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II
from prodigyopt import Prodigy

from .tuning_free_checks import check, check_betas, check_lr


@dataclass
class ProdigyConfig(FairseqDataclass):
    prodigy_betas: str = field(default="(0.9, 0.999)", metadata={
        "help": "Adam betas (first- and second-moment decay), each in [0, 1)"})
    prodigy_beta3: Optional[float] = field(default=None, metadata={
        "help": "decay of the running sums that estimate d, in [0, 1); default: sqrt(beta2)"})
    prodigy_eps: float = field(default=1e-8, metadata={"help": "epsilon of the denominator; > 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay; >= 0"})
    prodigy_coupled_weight_decay: bool = field(default=False, metadata={
        "help": "add the weight decay to the gradient (L2) instead of the decoupled, AdamW-style "
                "decay that the package uses by default"})
    prodigy_bias_correction: bool = field(default=False, metadata={
        "help": "turn on Adam's bias correction (off in the package by default)"})
    prodigy_safeguard_warmup: bool = field(default=False, metadata={
        "help": "leave lr out of the denominator of the d estimate (helps with an lr warm-up)"})
    prodigy_d0: float = field(default=1e-6, metadata={"help": "initial estimate of d; > 0"})
    prodigy_d_coef: float = field(default=1.0, metadata={
        "help": "multiplies the estimate of d (the package's preferred knob); > 0"})
    prodigy_growth_rate: float = field(default=math.inf, metadata={
        "help": "most d may grow per update, as a factor >= 1 (inf: unrestricted)"})
    prodigy_slice_p: int = field(default=1, metadata={
        "help": "estimate d from every p-th entry only (saves memory; 1 = exact); >= 1"})
    lr: List[float] = II("optimization.lr")


@register_optimizer("prodigy", dataclass=ProdigyConfig)
class FairseqProdigy(FairseqOptimizer):
    def __init__(self, cfg, params):
        super().__init__(cfg)
        self._optimizer = Prodigy(params, **self.optimizer_config)

    @property
    def optimizer_config(self):
        cfg = self.cfg
        beta3 = cfg.prodigy_beta3
        if beta3 is not None:
            check(beta3, 0 <= beta3 < 1, "--prodigy-beta3", "in [0, 1) (or unset: sqrt(beta2))")
        return {
            "lr": check_lr(cfg.lr, "prodigy (the package's default is 1.0)"),
            "betas": check_betas(cfg.prodigy_betas, "--prodigy-betas", beta1_min_open=False),
            "beta3": beta3,
            "eps": check(cfg.prodigy_eps, cfg.prodigy_eps > 0, "--prodigy-eps", "> 0"),
            "weight_decay": check(cfg.weight_decay, cfg.weight_decay >= 0, "--weight-decay", ">= 0"),
            "decouple": not cfg.prodigy_coupled_weight_decay,
            "use_bias_correction": cfg.prodigy_bias_correction,
            "safeguard_warmup": cfg.prodigy_safeguard_warmup,
            "d0": check(cfg.prodigy_d0, cfg.prodigy_d0 > 0, "--prodigy-d0", "> 0"),
            "d_coef": check(cfg.prodigy_d_coef, cfg.prodigy_d_coef > 0, "--prodigy-d-coef", "> 0"),
            "growth_rate": check(cfg.prodigy_growth_rate, cfg.prodigy_growth_rate >= 1,
                                 "--prodigy-growth-rate", ">= 1 (inf: unrestricted)"),
            "slice_p": check(cfg.prodigy_slice_p, cfg.prodigy_slice_p >= 1, "--prodigy-slice-p",
                             "an integer >= 1"),
        }

    def step(self, closure=None, scale=1.0, groups=None):
        super().step(closure, scale, groups)
        group = self._optimizer.param_groups[0]
        # the package keeps d as a host float (it syncs itself), so logging adds no sync
        metrics.log_scalar("prodigy_d", group["d"], weight=0, priority=820)
        metrics.log_scalar("eff_lr", group["d"] * group["lr"], weight=0, priority=301)

    @property
    def supports_flat_params(self):
        return True
