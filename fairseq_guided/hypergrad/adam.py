"""Adam as fairseq's `adam` does it (decoupled weight decay scaled by lr, eps outside the
bias correction), and the derivative of its update with respect to its hyper-parameters.

    m'  = b1 m + (1 - b1) g            v' = b2 v + (1 - b2) g^2
    c   = sqrt(1 - b2^t) / (1 - b1^t)   D  = sqrt(v') + eps
    theta' = theta (1 - wd lr) - lr c m' / D

Hyper-parameter values may be Python floats or 0-d tensors (learned values on the device).
"""
from __future__ import annotations

import math

import torch

from ._ops import add_scaled_, add_scaled_product_, add_scaled_ratio_, decay_, is_number

HYPERPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay")


def adam_step_(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update one tensor in place (step is the 1-based count after this update)."""
    add_scaled_(exp_avg.mul_(beta1), grad, 1 - beta1)
    add_scaled_product_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)
    denom = exp_avg_sq.sqrt().add_(eps)
    bias_correction2 = 1 - beta2**step
    sqrt_bc2 = math.sqrt(bias_correction2) if is_number(bias_correction2) else bias_correction2.sqrt()
    step_size = lr * sqrt_bc2 / (1 - beta1**step)
    decay_(param, weight_decay, lr)
    add_scaled_ratio_(param, exp_avg, denom, -step_size)


def _safe_div(num, den):
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), 0.0)


def adam_hyper_dots(names, guide_grad, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2,
                    eps, weight_decay):
    """<guide_grad, d theta'/d h> for h in names, from the post-step tensors.

    `param`, `exp_avg`, `exp_avg_sq` are the values the update left; `grad` is the
    gradient it used. Returns a list of 0-d tensors in the order of `names`.
    """
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    denom = exp_avg_sq.sqrt() + eps
    adam_dir = exp_avg / denom  # m'/D
    c = bc2**0.5 / bc1
    theta = (param + lr * c * adam_dir) / (1 - lr * weight_decay)  # the pre-step parameter
    out = []
    for name in names:
        if name == "lr":
            d = -weight_decay * theta - c * adam_dir
        elif name == "weight_decay":
            d = -lr * theta
        elif name == "eps":
            d = lr * c * adam_dir / denom
        elif name == "beta1":
            dm = (exp_avg - grad) / beta1  # d m'/d b1 = m - g, recovered from m'
            d = -lr * bc2**0.5 / denom * (dm / bc1 + exp_avg * step * beta1 ** (step - 1) / bc1**2)
        elif name == "beta2":
            dv = (exp_avg_sq - grad * grad) / beta2  # d v'/d b2 = v - g^2
            d_denom = _safe_div(dv, 2 * exp_avg_sq.sqrt())
            d_sqrt_bc2 = -step * beta2 ** (step - 1) / (2 * bc2**0.5)
            d = -lr * exp_avg / bc1 * (d_sqrt_bc2 / denom - bc2**0.5 * d_denom / denom**2)
        else:
            raise KeyError(name)
        out.append(torch.sum(guide_grad * d))
    return out
