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

from ._ops import add_scaled_, decay_, is_number
from ._ops import dot as _dot
from .base import GuidedOptimizerBase



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


def new_state(param, use_first_moment):
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


def _columns(names, beta1, weight_decay, scale_parameter):
    cols = ["scaled"]
    decays = not (is_number(weight_decay) and weight_decay == 0)
    if "weight_decay" in names or decays:
        cols.append("theta'")
    if beta1 is not None and ("beta1" in names or "theta'" in cols):
        cols.append("exp_avg")  # a' enters through beta1's derivative and theta only
    if scale_parameter:
        cols.append("lr_scale")
    return cols


def adafactor_dot_row(names, guide_grad, param, grad, state, beta1, weight_decay, *, eps2,
                      clip_threshold, scale_parameter):
    """One tensor's dot products with G, from the post-step tensor and state;
    adafactor_combine turns the rows into the hypergradient. With lr_p = lr x s (s =
    max(eps2, RMS(theta)) when scale_parameter, else 1) and S = s x clipped U, every
    derivative is a combination of S, theta' and a' (the first moment, when kept)."""
    G = guide_grad
    lr_scale = param_lr(1.0, state, scale_parameter, eps2)
    scaled_update = _clip(_normalised_update(grad, state), clip_threshold) * lr_scale
    row = []
    for col in _columns(names, beta1, weight_decay, scale_parameter):
        if col == "scaled":
            row.append(_dot(G, scaled_update))
        elif col == "theta'":
            row.append(_dot(G, param))
        elif col == "exp_avg":
            row.append(_dot(G, state["exp_avg"]))
        else:
            row.append(lr_scale.to(row[0].dtype))
    return torch.stack(row)


def adafactor_combine(names, rows, lr, beta1, weight_decay, *, scale_parameter):
    """d L_guide / d h for h in names from the (N, R) rows of adafactor_dot_row (float64),
    vectorised over the tensors (each has its own lr scale)."""
    cols = dict(zip(_columns(names, beta1, weight_decay, scale_parameter), rows.unbind(1)))
    g_s = cols["scaled"]
    lr_scale = cols.get("lr_scale", 1.0)
    g_step = lr * g_s  # <G, lr_p U>
    g_applied = cols.get("exp_avg", g_step)  # <G, a'>: a' = lr_p U without a first moment
    if "theta'" in cols:
        # theta' = theta (1 - wd lr_p) - a'
        g_theta = (cols["theta'"] + g_applied) / (1 - weight_decay * lr * lr_scale)
    out = []
    for name in names:
        if name == "lr":
            keep = (1 - beta1) if beta1 is not None else 1.0
            # no division by lr: it is 0 at the first update of a warm-up from 0
            d = -keep * g_s - (weight_decay * lr_scale * g_theta if "theta'" in cols else 0.0)
        elif name == "weight_decay":
            d = -lr * lr_scale * g_theta
        elif name == "beta1":
            if beta1 is None:
                raise ValueError("beta1 is learned only when Adafactor keeps a first moment")
            d = -(g_applied - g_step) / beta1  # -(a - lr_p U), a recovered from a'
        else:
            raise KeyError(name)
        out.append(d.sum())
    return out


class GuidedAdafactor(GuidedOptimizerBase):
    """fairseq's Adafactor (explicit lr, optional beta1) with learnable alpha, beta1, wd."""

    FIXED_HPARAMS = ("beta1", "weight_decay")

    def __init__(self, params, learned, lr=1e-3, beta1=None, weight_decay=0.0, eps1=1e-30,
                 eps2=1e-3, clip_threshold=1.0, decay_rate=-0.8, scale_parameter=False,
                 keep_step_grad=False, foreach=True):
        defaults = dict(lr=lr, beta1=beta1, weight_decay=weight_decay, eps1=eps1, eps2=eps2,
                        clip_threshold=clip_threshold, decay_rate=decay_rate,
                        scale_parameter=scale_parameter)
        # factored moments and per-tensor clipping: the update stays a per-tensor loop
        super().__init__(params, defaults, learned, keep_step_grad, foreach)

    def _options(self, group, *keys):
        return {k: group[k] for k in keys}

    def init_state(self, p, state, group):
        state.update(new_state(p, group["beta1"] is not None))

    def update_one(self, p, grad, state, group, hp):
        adafactor_step_(
            p, grad, state, **hp,
            **self._options(group, "eps1", "eps2", "clip_threshold", "decay_rate", "scale_parameter"),
        )

    def row_one(self, names, guide_grad, p, grad, state, group, hp, disposable=False):
        return adafactor_dot_row(
            names, guide_grad, p, grad, state, hp["beta1"], hp["weight_decay"],
            **self._options(group, "eps2", "clip_threshold", "scale_parameter"),
        )

    def combine_one(self, names, rows, step, group, hp):
        return adafactor_combine(names, rows, hp["lr"], hp["beta1"], hp["weight_decay"],
                                 scale_parameter=group["scale_parameter"])
