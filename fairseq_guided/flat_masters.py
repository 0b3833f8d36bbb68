"""Flat --fp16 (fairseq's default) for updates that need whole tensors: LAMB's per-tensor
trust ratio and Adafactor's factored moments.

fairseq's FP16Optimizer copies every trainable parameter into one flat fp32 buffer and
builds the optimizer on that single tensor; the optimizer is never told where one
parameter ends. The guided tasks record the shapes when they build the model and the
criterion: the same tensors, in the same order (requires_grad, model then criterion),
that fairseq's Trainer flattens. The guided optimizer then steps one view of the buffer
per parameter, whose .grad is the matching view of the buffer's gradient. fairseq keeps
its single buffer (one copy in, one loss-scale multiply, one copy out) and the update
sees whole tensors. Its state is per parameter, the same layout as under
--fp16-no-flatten-grads.

The names are recorded beside the shapes: --guided-groups assigns the tensors the
optimizer is handed (in this same order) to groups by name.
"""
from __future__ import annotations

import torch

_shapes = {"model": [], "criterion": []}
_names = {"model": [], "criterion": []}


def record_layout(part: str, module: torch.nn.Module) -> None:
    """Remember the trainable parameter shapes and names of the model or the criterion
    just built (named_parameters() walks the same tensors as parameters(), in order)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    _shapes[part] = [p.shape for _, p in named]
    _names[part] = [n if part == "model" else f"{part}.{n}" for n, _ in named]


def recorded_shapes() -> list:
    return _shapes["model"] + _shapes["criterion"]


def recorded_names() -> list:
    return _names["model"] + _names["criterion"]


def split_flat_master(params: list):
    """Views of a flat fp32 master, one per recorded parameter; None when `params` is not
    one flat buffer of exactly the recorded size."""
    if len(params) != 1 or not torch.is_tensor(params[0]) or params[0].dim() != 1:
        return None
    flat, shapes = params[0], recorded_shapes()
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
