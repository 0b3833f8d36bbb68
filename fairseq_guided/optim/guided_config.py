"""Config fields every guided optimizer shares, and turning them into a
`LearnedHyperParams`. Validation happens here, when fairseq builds the optimizer, which
is before the first training step."""

import math
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass

from ..hypergrad.hyperparams import (
    LearnedHyperParams, MetaAdamConfig, check_initial_value, parse_name_list, parse_name_values,
)


@dataclass
class GuidedHyperConfig(FairseqDataclass):
    guided_hparams: str = field(
        default="",
        metadata={"help": "comma-separated hyper-parameters to learn from the guidance loss, "
                  "e.g. 'alpha,beta1' (empty: learn nothing, behave as the stock optimizer). "
                  "Allowed names depend on the optimizer: alpha (scale on the scheduled lr), "
                  "beta1, and for adam/lamb also beta2, eps, weight_decay; adafactor also "
                  "weight_decay. A learned value starts from the optimizer's own setting."},
    )
    guided_alpha_init: float = field(
        default=1.0, metadata={"help": "initial alpha (multiplies the scheduled lr); > 0. Only "
                              "with alpha in --guided-hparams (else it would change nothing)"}
    )
    guided_meta_lr: float = field(
        default=3e-5, metadata={"help": "learning rate of the Adam meta-optimizer (the paper's "
                                "eta-hat); >= 0 (0 keeps the values fixed but still logs "
                                "their hypergradients). Rule the presets follow: meta lr x "
                                "--max-update = 3 (e.g. 3e-5 for 100k updates, 0.0025 for "
                                "1,200): meta-Adam moves a raw value by about the meta lr a "
                                "step, so over the run a value can drift by about 3 in raw "
                                "space (alpha up to e^3-fold, beta1 from 0.9 to below 0.5)"}
    )
    guided_meta_betas: str = field(
        default="(0.9, 0.999)", metadata={"help": "betas of the Adam meta-optimizer, each in [0, 1)"}
    )
    guided_meta_eps: float = field(
        default=1e-8, metadata={"help": "epsilon of the Adam meta-optimizer; > 0"}
    )
    guided_meta_clip: float = field(
        default=0.0, metadata={"help": "clip each raw-space hypergradient to [-c, c] before the "
                               "meta step; 0 = no clipping"}
    )
    guided_steepness: str = field(
        default="", metadata={"help": "per hyper-parameter steepness s (value = act(s * raw)), "
                              "as NAME=S,NAME=S for names in --guided-hparams; unnamed ones use 1. It "
                              "multiplies that value's effective meta learning rate (changing it on "
                              "resume keeps the learned values); > 0"}
    )
    guided_groups: str = field(
        default="global", metadata={"help": "which parameters share a learned value: global (one "
                                    "value of each name); embed,encoder,decoder (module prefixes, "
                                    "first match wins: embed takes encoder.embed_tokens.weight); "
                                    "layer (one group per transformer layer, plus embed and output); "
                                    "or NAME=REGEX;NAME=REGEX on parameter names. Parameters no "
                                    "group takes share a group 'other'. Each group's values have "
                                    "their own hypergradient and meta-Adam state (logged as "
                                    "guided_alpha/GROUP); the grouping is checkpointed and must "
                                    "match on resume"}
    )
    guided_per_tensor_loop: bool = field(
        default=False, metadata={"help": "update each parameter tensor with its own kernels, as "
                                 "fairseq's own adam does, instead of one foreach kernel per "
                                 "operation over all tensors of a dtype (the default, faster "
                                 "on a GPU)"}
    )


def _parse_betas(text: str) -> tuple[float, float]:
    try:
        values = tuple(float(x) for x in str(text).strip("()[] ").split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or not all(0 <= b < 1 for b in values):
        raise ValueError(f"--guided-meta-betas: expected two numbers in [0, 1) like '(0.9, 0.999)'; got {text!r}")
    return values


def build_learned(cfg, learnable: tuple[str, ...], initial_values: dict[str, float | None],
                  optimizer_name: str, groups=None) -> LearnedHyperParams:
    """Validate the shared flags against one optimizer and build its learned values (one
    per name, or one per name and group of `groups`)."""
    names = parse_name_list(cfg.guided_hparams, learnable, f"--guided-hparams (for {optimizer_name})")
    if not (cfg.guided_meta_lr >= 0 and math.isfinite(cfg.guided_meta_lr)):
        raise ValueError(f"--guided-meta-lr must be a finite number >= 0; got {cfg.guided_meta_lr}")
    if not cfg.guided_meta_eps > 0:
        raise ValueError(f"--guided-meta-eps must be > 0; got {cfg.guided_meta_eps}")
    if not cfg.guided_meta_clip >= 0:
        raise ValueError(f"--guided-meta-clip must be >= 0 (0 = off); got {cfg.guided_meta_clip}")
    beta1, beta2 = _parse_betas(cfg.guided_meta_betas)
    steepness = {n: 1.0 for n in names}
    for name, s in parse_name_values(cfg.guided_steepness, learnable, "--guided-steepness").items():
        if name not in names:  # it would steer nothing
            raise ValueError(f"--guided-steepness: {name} is not learned (--guided-hparams "
                             f"{cfg.guided_hparams!r}); drop {name}= or add {name} to --guided-hparams")
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"--guided-steepness: {name}={s} must be > 0")
        steepness[name] = s
    if "alpha" not in names and cfg.guided_alpha_init != 1.0:  # it would leave the lr unchanged
        raise ValueError(f"--guided-alpha-init {cfg.guided_alpha_init} has no effect: alpha is not "
                         f"learned (--guided-hparams {cfg.guided_hparams!r}); add alpha to "
                         f"--guided-hparams, or drop --guided-alpha-init and scale --lr instead")
    init = dict(initial_values, alpha=cfg.guided_alpha_init)
    for name in names:
        if init.get(name) is None:
            raise ValueError(f"--guided-hparams: {optimizer_name} learns {name} only from an initial "
                             f"value; set it (for adafactor's beta1: --beta1 0.9)")
        flag = "--guided-alpha-init" if name == "alpha" else f"the optimizer's {name} setting"
        check_initial_value(name, float(init[name]), flag)
    meta = MetaAdamConfig(lr=cfg.guided_meta_lr, beta1=beta1, beta2=beta2, eps=cfg.guided_meta_eps,
                          grad_clip=cfg.guided_meta_clip)
    return LearnedHyperParams(names, {n: float(init[n]) for n in names}, steepness, meta, groups=groups)
