"""What every guided fairseq optimizer shares: its config fields (GuidedHyperConfig), the
learned values built from them (build_learned; checked here, when fairseq builds the
optimizer, before the first training step), the fairseq shell around the torch optimizer
(GuidedFairseqOptimizer: built on the parameters' device; fairseq's lr schedule stays the
base lr) and find_guided, which finds that shell inside fairseq's wrappers."""
# no `from __future__ import annotations`: fairseq reads the config fields' types at runtime

import logging
import math
from dataclasses import dataclass, field

from fairseq import metrics
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer

from .. import channels, param_groups
from ..flags import parse_groups, parse_name_list, parse_name_values, parse_unit_pair
from ..guidance.precision import split_flat_master
from ..hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig, check_initial_value

logger = logging.getLogger(__name__)


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
    beta1, beta2 = parse_unit_pair(cfg.guided_meta_betas, "--guided-meta-betas")
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


class GuidedFairseqOptimizer(FairseqOptimizer):
    """fairseq's view of a guided torch optimizer: a subclass names the torch class and
    turns its config into the torch optimizer's fixed settings (optimizer_config)."""

    torch_class = None  # a GuidedOptimizerBase subclass
    name = ""

    def __init__(self, cfg, params):
        super().__init__(cfg)
        params = list(params)
        fixed = self.optimizer_config
        self.validate(fixed)
        group_spec = parse_groups(cfg.guided_groups)
        # flat --fp16 hands over one buffer; a per-tensor update (or per-group values) steps
        # views of it instead
        per_tensor = not self.torch_class.ELEMENTWISE or group_spec is not None
        shapes, names = channels.recorded_layout()
        self.flat_views = split_flat_master(params, shapes) if per_tensor else None
        if self.flat_views is not None:
            params = self.flat_views
        grouping = None
        if group_spec is not None:
            grouping, params = group_params(group_spec, params, names, shapes)
        learned = build_learned(cfg, self.torch_class.learnable(), fixed, self.name,
                                groups=None if grouping is None else grouping.groups)
        if params:
            first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
            learned.to(first.device)
        self._optimizer = self.torch_class(params, learned, **fixed,
                                           foreach=not cfg.guided_per_tensor_loop)
        if grouping is not None:
            self._optimizer.grouping_record = grouping.as_dict()

    def validate(self, fixed: dict) -> None:
        """Refuse out-of-range fixed settings before training starts."""

    @property
    def guided(self):
        """The torch optimizer that knows the learned values and the update's derivative."""
        return self._optimizer

    def set_lr(self, lr):
        super().set_lr(lr)
        # fairseq sets the next update's lr after the meta step has set the next alpha, so
        # this pairs with fairseq's own "lr" log line.
        per_group = self._optimizer.effective_lrs()
        if not per_group:
            metrics.log_scalar("eff_lr", self._optimizer.effective_lr(), weight=0, priority=301)
        for index, value in per_group.items():
            group = self._optimizer.learned.groups[index]
            metrics.log_scalar(f"eff_lr/{group}", value, weight=0, priority=301)

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        # before torch's own param-group check, whose message would not say why
        param_groups.check_same_grouping(state_dict.get("guided_grouping"), self._optimizer.grouping_record)
        super().load_state_dict(state_dict, optimizer_overrides)

    @property
    def supports_flat_params(self):
        # elementwise Adam can step the flat buffer itself; LAMB and Adafactor step views
        # of it, which needs the layout a guided task records (else fairseq's own message
        # asks for --fp16-no-flatten-grads)
        return self.torch_class.ELEMENTWISE or self.flat_views is not None

    @property
    def supports_memory_efficient_fp16(self):
        return True


def group_params(spec, params: list, names: list, shapes: list):
    """The tensors handed to the optimizer as torch param groups, one per non-empty
    learned group (tagged with its index), from the names and shapes the guided task
    recorded for these same tensors in this same order; also the Grouping. Reports the
    groups' sizes, parameters no group takes, and groups that take none."""
    flag = f"{param_groups.FLAG} {spec.text!r}"
    if any(isinstance(p, dict) for p in params):
        raise ValueError(f"{flag}: the optimizer was handed parameter groups already; use "
                         f"{param_groups.FLAG} global")
    if len(names) != len(params) or any(tuple(s) != tuple(p.shape) for s, p in zip(shapes, params)):
        raise ValueError(
            f"{flag} needs the names of the {len(params)} tensors the optimizer updates, which a "
            f"guided task (--task guided_translation, guided_span_corruption) records when it "
            f"builds the model; it recorded {len(names)} that do not match (under flat --fp16, "
            f"pass --fp16-no-flatten-grads)")
    grouping = param_groups.assign_groups(spec, names)
    for line in param_groups.describe(grouping, [p.numel() for p in params]):
        logger.info(line)
    for line in param_groups.warnings_for(grouping):
        logger.warning(line)
    torch_groups = []
    for index in range(len(grouping.groups)):
        members = [p for p, g in zip(params, grouping.group_of) if g == index]
        if members:  # an empty group keeps its values (fixed) but steps nothing
            torch_groups.append({"params": members, "learned_group": index})
    return grouping, torch_groups


def find_guided(optimizer):
    """The GuidedFairseqOptimizer inside fairseq's precision wrappers (fp32_optimizer of
    --fp16 and --amp, wrapped_optimizer of --memory-efficient-fp16), or None: the one way
    the plugin finds it. Its .guided is the torch optimizer."""
    for _ in range(6):
        if isinstance(optimizer, GuidedFairseqOptimizer):
            return optimizer
        inner = getattr(optimizer, "fp32_optimizer", None)
        if inner is None:
            inner = getattr(optimizer, "wrapped_optimizer", None)
        if inner is None:
            return None
        optimizer = inner
    return None
