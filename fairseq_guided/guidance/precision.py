"""The guidance pass under fairseq's precision wrappers (--fp16, --amp,
--memory-efficient-fp16): where the tensors the guided optimizer stepped are, and what
loss scale and autocast the guidance loss takes.

Flat --fp16 (fairseq's default) copies every trainable parameter into one flat fp32
buffer and builds the optimizer on that single tensor; the optimizer is never told where
one parameter ends. An update that needs whole tensors (LAMB's per-tensor trust ratio,
Adafactor's factored moments, per-group values) then steps one view of the buffer per
parameter (split_flat_master), from the shapes the guided task recorded when it built the
model (channels.record_layout), whose .grad is the matching view of the buffer's gradient.
fairseq keeps its single buffer (one copy in, one loss-scale multiply, one copy out) and
the update sees whole tensors; its state is per parameter, the same layout as under
--fp16-no-flatten-grads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


# -- flat --fp16: views of the one fp32 master ----------------------------------------------
def split_flat_master(params: list, shapes: list):
    """Views of a flat fp32 master, one per shape; None when `params` is not one flat
    buffer of exactly that size."""
    if len(params) != 1 or not torch.is_tensor(params[0]) or params[0].dim() != 1:
        return None
    flat = params[0]
    if len(shapes) < 2 or sum(s.numel() for s in shapes) != flat.numel() or flat.grad is None:
        return None
    views, offset = [], 0
    for shape in shapes:
        n = shape.numel()
        view = flat.data[offset:offset + n].view(shape)
        # fairseq only ever writes the buffer's gradient in place (copy_, mul_, zero_), so
        # these views stay the gradient for the whole run
        view.grad = flat.grad.data[offset:offset + n].view(shape)
        views.append(view)
        offset += n
    return views


def check_views_match(views: list, fp16_params: list, optimizer_name: str) -> None:
    """Refuse a layout that is not the one fairseq flattened (a model changed after the
    task built it): the update would mix tensors silently."""
    shapes = [tuple(p.shape) for p in fp16_params if p.requires_grad]
    if shapes != [tuple(v.shape) for v in views]:
        raise RuntimeError(
            f"--fp16 (flat): {optimizer_name} was built for {len(views)} parameter tensors as the "
            f"guided task recorded them, but fairseq flattened {len(shapes)} of other shapes; "
            f"pass --fp16-no-flatten-grads")


# -- what the guided optimizer stepped, per model parameter ---------------------------------
@dataclass
class MasterSlot:
    group_index: int
    owner: torch.Tensor  # the tensor the guided optimizer stepped
    region: Optional[slice]  # part of a flat owner, or None for the whole tensor
    train_grad: torch.Tensor  # the gradient that step used, owner-shaped (dot_row takes the region)


def master_slots(optimizer, guided, params, flat_views) -> dict:
    """id(model parameter) -> MasterSlot, for the parameters the last step updated: the
    parameter itself; its fp32 master under --fp16 --fp16-no-flatten-grads; a view or a
    slice of the flat fp32 master under --fp16. `flat_views`: the views the guided
    optimizer steps under flat --fp16, else None."""
    group_of = {id(p): gi for gi, g in enumerate(guided.param_groups) for p in g["params"]}
    fp32_params = getattr(optimizer, "fp32_params", None)
    fp16_params = getattr(optimizer, "fp16_params", None)
    slots = {}
    if isinstance(fp32_params, dict) and flat_views is not None:  # flat --fp16, per-tensor update
        # the layout was checked once, at the first training step (GuidanceRunner.bind)
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


# -- the guidance loss in half precision ----------------------------------------------------
def guidance_loss_scale(optimizer):
    """The loss scale the training pass used (1 in full precision): the guidance pass uses
    it too, so its half-precision gradients neither underflow nor need a second scaler.
    A device tensor under --amp (read without a host sync)."""
    scaler = getattr(optimizer, "scaler", None)
    if isinstance(scaler, torch.amp.GradScaler) or \
            isinstance(getattr(optimizer, "_grad_scaler", None), torch.amp.GradScaler):
        grad_scaler = getattr(optimizer, "_grad_scaler", scaler)
        scale = getattr(grad_scaler, "_scale", None)
        return scale if scale is not None and grad_scaler.is_enabled() else 1.0
    if scaler is not None and hasattr(scaler, "loss_scale"):
        return float(scaler.loss_scale)
    return 1.0


def guidance_autocast(optimizer):
    """The guidance forward runs in the precision the training forward ran in."""
    amp = type(optimizer).__name__ == "AMPOptimizer" and torch.cuda.is_available()
    return torch.autocast("cuda", dtype=torch.float16, enabled=amp)
