"""Keep a schedule-free optimizer's train/eval mode in step with the fairseq model it updates.

Schedule-free keeps two points: y, where gradients are taken (the parameters during
training), and x, the average that should be evaluated and saved. `optimizer.eval()` moves
the parameters to x, `optimizer.train()` back to y. fairseq calls no optimizer method before
validation, and stock tasks (`--task translation`, ...) know nothing about schedule-free, so
the switch is tied to what fairseq does to the *model* in every task:

* fairseq's trainer calls `model.train()` before a training forward and `model.eval()`
  before a validation forward. A forward pre-hook on the model compares `model.training`
  with the optimizer's mode and switches it: validation (and generation with --eval-bleu,
  which runs after the validation loss in the same eval mode) sees x; the next training
  forward switches back to y.
* A state-dict pre-hook on the model switches to eval before `model.state_dict()`: every
  checkpoint (checkpoint_N.pt, _last, _best, hence fairseq-generate/validate) holds x, and
  the optimizer state saved next to it says "eval mode". Resuming loads x and that mode;
  the first training forward calls train() and recomputes y exactly as an uninterrupted
  run does after its own save, so a resume continues bit for bit.

The optimizer is built from the parameter list only, so the model is found at its first
forward: a global module forward pre-hook (channels.until_first_model) waits for a fairseq model whose trainable
parameters are the optimizer's (fp32 / --amp), or have the shapes of its fp32 masters
(--fp16: per-tensor masters, or one flat buffer), then removes itself. Under --fp16 the
model holds half-precision copies of the masters, so after each switch the masters are
copied into the model, as fairseq's FP16Optimizer does after a step.
"""
from __future__ import annotations

import weakref

import torch
from fairseq.models import BaseFairseqModel

from .. import channels


def _copy_pairs(model_params, masters):
    """(model tensor, master tensor) pairs to copy after a switch: [] when the model holds the
    masters themselves, None when the model is not the one these masters belong to."""
    if not model_params or not masters:
        return None
    if all(a is b for a, b in zip(model_params, masters)):
        return []
    if len(masters) >= len(model_params) and all(
            m.shape == p.shape for p, m in zip(model_params, masters)):
        return list(zip(model_params, masters))
    flat = masters[0]
    sizes = [p.numel() for p in model_params]
    if len(masters) == 1 and flat.dim() == 1 and sum(sizes) <= flat.numel():
        views = torch.split(flat.data[:sum(sizes)], sizes)
        return [(p, v.view_as(p)) for p, v in zip(model_params, views)]
    return None


class ModelModeLink:
    """Attach with `ModelModeLink(optimizer)`, where optimizer has .train(), .eval(),
    .param_groups and a 'train_mode' flag in its groups (schedulefree's optimizers)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.model = None
        self.pairs = []
        me = weakref.ref(self)  # a finished optimizer must not be kept alive by the global hook

        def claim(module, args) -> bool:
            link = me()
            if link is None or link.model is not None:
                return True
            if isinstance(module, BaseFairseqModel) and link.attach(module):
                link.follow(module, args)  # this forward already collected its hooks
                return True
            return False

        channels.until_first_model(claim)

    def attach(self, model) -> bool:
        masters = [p for g in self.optimizer.param_groups for p in g["params"]]
        pairs = _copy_pairs([p for p in model.parameters() if p.requires_grad], masters)
        if pairs is None:
            return False
        self.model, self.pairs = model, pairs
        model.register_forward_pre_hook(self.follow)
        model.register_state_dict_pre_hook(lambda module, prefix, keep_vars: self.eval())
        return True

    @property
    def training(self) -> bool:
        return self.optimizer.param_groups[0]["train_mode"]

    def follow(self, module, args):
        # a deep copy of the model (fairseq's --ema) carries this hook too: only ours counts
        if module is self.model and module.training != self.training:
            self.train() if module.training else self.eval()

    @torch.no_grad()
    def _sync(self):
        for param, master in self.pairs:
            param.copy_(master)

    def train(self):
        if not self.training:
            self.optimizer.train()
            self._sync()

    def eval(self):
        if self.training:
            self.optimizer.eval()
            self._sync()
