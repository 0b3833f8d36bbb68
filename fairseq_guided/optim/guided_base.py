"""Shared fairseq shell of the guided optimizers: builds the torch optimizer with its
learned values on the parameters' device; fairseq's lr schedule stays the base lr."""
from __future__ import annotations

from fairseq import metrics
from fairseq.optim import FairseqOptimizer

from ..flat_masters import split_flat_master
from .guided_config import build_learned


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
        learned = build_learned(cfg, self.torch_class.learnable(), fixed, self.name)
        # flat --fp16 hands over one buffer; a per-tensor update steps views of it instead
        self.flat_views = None if self.torch_class.ELEMENTWISE else split_flat_master(params)
        if self.flat_views is not None:
            params = self.flat_views
        if params:
            first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
            learned.to(first.device)
        self._optimizer = self.torch_class(params, learned, **fixed,
                                           foreach=not cfg.guided_per_tensor_loop)

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
        metrics.log_scalar("eff_lr", self._optimizer.effective_lr(), weight=0, priority=301)

    @property
    def supports_flat_params(self):
        # elementwise Adam can step the flat buffer itself; LAMB and Adafactor step views
        # of it, which needs the layout a guided task records (else fairseq's own message
        # asks for --fp16-no-flatten-grads)
        return self.torch_class.ELEMENTWISE or self.flat_views is not None

    @property
    def supports_memory_efficient_fp16(self):
        return True
