"""Where fairseq's precision wrappers keep what the guided optimizer updated.

For each model parameter the guidance backward produces a gradient on, find the tensor the
guided optimizer stepped (the parameter itself; its fp32 master under --fp16
--fp16-no-flatten-grads; a slice of the flat fp32 master under --fp16), and the gradient
that step used. Also the loss scale to apply to the guidance loss in half precision.
"""
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class MasterSlot:
    group_index: int
    owner: torch.Tensor  # the tensor the guided optimizer stepped
    region: Optional[slice]  # part of a flat owner, or None for the whole tensor
    train_grad: torch.Tensor  # the gradient that step used, owner-shaped (dot_row takes the region)


def master_slots(optimizer, guided, params) -> dict:
    """id(model parameter) -> MasterSlot, for the parameters the last step updated."""
    group_of = {id(p): gi for gi, g in enumerate(guided.param_groups) for p in g["params"]}
    fp32_params = getattr(optimizer, "fp32_params", None)
    fp16_params = getattr(optimizer, "fp16_params", None)
    slots = {}
    flat_views = getattr(find_fairseq_guided(optimizer), "flat_views", None)
    if isinstance(fp32_params, dict) and flat_views is not None:  # flat --fp16, per-tensor update
        # the layout was checked once, at the first training step (GuidedTaskMixin)
        for p, view in zip((p for p in fp16_params if p.requires_grad), flat_views):
            if view in guided.state:
                slots[id(p)] = MasterSlot(group_of[id(view)], view, None, view.grad)
        return slots
    if isinstance(fp32_params, dict):  # flat --fp16, elementwise update: slices of the buffer
        offsets = {}
        for p in fp16_params:
            flat = fp32_params[next(iter(fp32_params))] if len(fp32_params) == 1 else fp32_params[p.device.index]
            start = offsets.get(id(flat), 0)
            region = slice(start, start + p.numel())
            offsets[id(flat)] = region.stop
            if flat in guided.state:
                slots[id(p)] = MasterSlot(group_of[id(flat)], flat, region, flat.grad)
        return slots
    if isinstance(fp32_params, list):  # --fp16 --fp16-no-flatten-grads
        pairs = zip(fp16_params, fp32_params)
    else:  # fp32, --amp, --memory-efficient-fp16: the optimizer steps the parameters
        pairs = ((p, p) for p in params)
    for p, owner in pairs:
        if owner in guided.state and owner.grad is not None:
            slots[id(p)] = MasterSlot(group_of[id(owner)], owner, None, owner.grad)
    return slots


def find_fairseq_guided(optimizer):
    """The registered guided fairseq optimizer inside fairseq's precision wrappers."""
    while not hasattr(optimizer, "flat_views") and hasattr(optimizer, "fp32_optimizer"):
        optimizer = optimizer.fp32_optimizer
    return optimizer


def guidance_loss_scale(optimizer):
    """The loss scale the training pass used (1 in full precision): the guidance pass uses
    it too, so its half-precision gradients neither underflow nor need a second scaler.
    A device tensor under --amp (read without a host sync)."""
    scaler = getattr(optimizer, "scaler", None)
    if isinstance(scaler, torch.amp.GradScaler) or isinstance(getattr(optimizer, "_grad_scaler", None), torch.amp.GradScaler):
        grad_scaler = getattr(optimizer, "_grad_scaler", scaler)
        scale = getattr(grad_scaler, "_scale", None)
        return scale if scale is not None and grad_scaler.is_enabled() else 1.0
    if scaler is not None and hasattr(scaler, "loss_scale"):
        return float(scaler.loss_scale)
    return 1.0
