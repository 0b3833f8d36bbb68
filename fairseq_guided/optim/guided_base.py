"""Shared fairseq shell of the guided optimizers: builds the torch optimizer with its
learned values on the parameters' device; fairseq's lr schedule stays the base lr."""
from __future__ import annotations

import logging

from fairseq import metrics
from fairseq.optim import FairseqOptimizer

from .. import param_groups
from ..flat_masters import recorded_names, recorded_shapes, split_flat_master
from .guided_config import build_learned

logger = logging.getLogger(__name__)


def parse_float_tuple(text, flag: str, length: int) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in str(text).strip("()[] ").split(","))
    except ValueError:
        values = ()
    if len(values) != length:
        raise ValueError(f"{flag}: expected {length} comma-separated numbers; got {text!r}")
    return values


class GuidedFairseqOptimizer(FairseqOptimizer):
    torch_class = None  # a GuidedOptimizerBase subclass
    name = ""

    def __init__(self, cfg, params):
        super().__init__(cfg)
        params = list(params)
        fixed = self.optimizer_config
        self.validate(fixed)
        group_spec = param_groups.parse_groups(cfg.guided_groups)
        # flat --fp16 hands over one buffer; a per-tensor update (or per-group values) steps
        # views of it instead
        per_tensor = not self.torch_class.ELEMENTWISE or group_spec is not None
        self.flat_views = split_flat_master(params) if per_tensor else None
        if self.flat_views is not None:
            params = self.flat_views
        grouping = None
        if group_spec is not None:
            grouping, params = group_params(group_spec, params)
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

    @property
    def supports_flat_params(self):
        # elementwise Adam can step the flat buffer itself; LAMB and Adafactor step views
        # of it, which needs the layout a guided task records (else fairseq's own message
        # asks for --fp16-no-flatten-grads)
        return self.torch_class.ELEMENTWISE or self.flat_views is not None

    @property
    def supports_memory_efficient_fp16(self):
        return True


def group_params(spec, params: list):
    """The tensors handed to the optimizer as torch param groups, one per non-empty
    learned group (tagged with its index), from the names the guided task recorded for
    these same tensors in this same order; also the Grouping. Reports the groups' sizes,
    parameters no group takes, and groups that take none."""
    names, shapes = recorded_names(), recorded_shapes()
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
