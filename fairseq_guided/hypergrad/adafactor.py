"""Adafactor as fairseq's `adafactor` does it with an explicit lr (no relative step):
factored second moments for tensors of rank >= 2, update clipping, and the first moment
(beta1) applied to the already lr-scaled update. The derivative of the update follows.

    beta2_t = 1 - t^decay_rate
    U   = grad * rsqrt(second-moment estimate)          (factored: row x col)
    U   = U / max(1, RMS(U) / clip_threshold)
    lr_p = lr * max(eps2, RMS(theta))  if scale_parameter else lr
    a'  = b1 a + (1 - b1) lr_p U        (a' = lr_p U without beta1)
    theta' = theta (1 - wd lr_p) - a'

Only lr (alpha), beta1 and weight decay are learned for Adafactor: none of them enters U,
so the clipping and factoring need no derivative.
"""
from __future__ import annotations

import torch

from ._ops import add_scaled_, decay_
from ._ops import dot as _dot

HYPERPARAMS = ("lr", "beta1", "weight_decay")


def rms(tensor):
    return tensor.norm(2) / (tensor.numel() ** 0.5)


def _normalised_update(grad, state):
    """grad * rsqrt(second moment), clipped; from the second-moment state after the step."""
    if "exp_avg_sq_row" in state:
        row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
        c_factor = col.unsqueeze(-2).rsqrt()
        update = r_factor * c_factor * grad
    else:
        update = state["exp_avg_sq"].rsqrt() * grad
    return update


def _clip(update, clip_threshold):
    return update / (rms(update) / clip_threshold).clamp(min=1.0)


def init_state(param, use_first_moment):
    state = {"step": 0, "RMS": torch.zeros((), dtype=param.dtype, device=param.device)}
    if use_first_moment:
        state["exp_avg"] = torch.zeros_like(param)
    if param.dim() >= 2:
        state["exp_avg_sq_row"] = torch.zeros(param.shape[:-1], dtype=param.dtype, device=param.device)
        state["exp_avg_sq_col"] = torch.zeros(
            param.shape[:-2] + param.shape[-1:], dtype=param.dtype, device=param.device
        )
    else:
        state["exp_avg_sq"] = torch.zeros_like(param)
    return state


def param_lr(lr, state, scale_parameter, eps2):
    if not scale_parameter:
        return lr
    return lr * torch.clamp(state["RMS"], min=eps2)


def adafactor_step_(param, grad, state, lr, beta1, weight_decay, *, eps1, eps2, clip_threshold,
                    decay_rate, scale_parameter):
    """Update one tensor and its state in place (state["step"] is incremented here)."""
    state["step"] += 1
    state["RMS"] = rms(param)
    lr_p = param_lr(lr, state, scale_parameter, eps2)
    beta2t = 1.0 - state["step"] ** decay_rate
    sq = grad * grad + eps1
    if "exp_avg_sq_row" in state:
        state["exp_avg_sq_row"].mul_(beta2t).add_(sq.mean(dim=-1), alpha=1.0 - beta2t)
        state["exp_avg_sq_col"].mul_(beta2t).add_(sq.mean(dim=-2), alpha=1.0 - beta2t)
    else:
        state["exp_avg_sq"].mul_(beta2t).add_(sq, alpha=1.0 - beta2t)
    update = _clip(_normalised_update(grad, state), clip_threshold) * lr_p
    if beta1 is not None:
        add_scaled_(state["exp_avg"].mul_(beta1), update, 1 - beta1)
        update = state["exp_avg"]
    decay_(param, weight_decay, lr_p)
    param.add_(-update)


def adafactor_hyper_dots(names, guide_grad, param, grad, state, lr, beta1, weight_decay, *,
                         eps2, clip_threshold, scale_parameter):
    """<guide_grad, d theta'/d h> for h in names, from the post-step tensor and state."""
    lr_scale = param_lr(1.0, state, scale_parameter, eps2)  # lr_p = lr * lr_scale
    lr_p = lr * lr_scale
    scaled_update = _clip(_normalised_update(grad, state), clip_threshold) * lr_scale
    step_update = scaled_update * lr  # lr_p U
    applied = state["exp_avg"] if beta1 is not None else step_update
    theta = (param + applied) / (1 - weight_decay * lr_p)
    out = []
    for name in names:
        if name == "lr":
            keep = (1 - beta1) if beta1 is not None else 1.0
            # no division by lr: it is 0 at the first update of a warm-up from 0
            d = -keep * scaled_update - weight_decay * lr_scale * theta
        elif name == "weight_decay":
            d = -lr_p * theta
        elif name == "beta1":
            if beta1 is None:
                raise ValueError("beta1 is learned only when Adafactor keeps a first moment")
            d = -(state["exp_avg"] - step_update) / beta1  # -(a - lr_p U), a recovered from a'
        else:
            raise KeyError(name)
        out.append(_dot(guide_grad, d))
    return out
