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
from ._ops import dot as _dot
from ._ops import foreach_add_scaled_ratio_, foreach_decay_, foreach_ema_, foreach_ema_square_
from .base import GuidedOptimizerBase, advance_steps



def adam_step_(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update one tensor in place (step is the 1-based count after this update)."""
    add_scaled_(exp_avg.mul_(beta1), grad, 1 - beta1)
    add_scaled_product_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)
    denom = exp_avg_sq.sqrt().add_(eps)
    decay_(param, weight_decay, lr)
    add_scaled_ratio_(param, exp_avg, denom, -_step_size(lr, beta1, beta2, step))


def adam_step_foreach_(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
                       weight_decay):
    """adam_step_ for lists of tensors that share device, dtype and step count: the same
    arithmetic as a few foreach kernels over all of them."""
    foreach_ema_(exp_avgs, grads, beta1)
    foreach_ema_square_(exp_avg_sqs, grads, beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denoms, eps)
    foreach_decay_(params, weight_decay, lr)
    foreach_add_scaled_ratio_(params, exp_avgs, denoms, -_step_size(lr, beta1, beta2, step))


def _step_size(lr, beta1, beta2, step):
    bias_correction2 = 1 - beta2**step
    sqrt_bc2 = math.sqrt(bias_correction2) if is_number(bias_correction2) else bias_correction2.sqrt()
    return lr * sqrt_bc2 / (1 - beta1**step)


def _columns(names, weight_decay):
    """Which per-tensor dot products the learned names need, in row order."""
    decays = not (is_number(weight_decay) and weight_decay == 0)
    cols = ["dir"]
    if "weight_decay" in names or ("lr" in names and decays):
        cols.append("theta")
    cols += [c for c, n in (("grad", "beta1"), ("eps", "eps"), ("beta2", "beta2")) if n in names]
    return cols


def adam_dot_row(names, guide_grad, param, grad, exp_avg, exp_avg_sq, eps, weight_decay,
                 guide_grad_disposable=False):
    """One tensor's dot products with the guidance gradient G, from the post-step tensors
    (`param`, `exp_avg`, `exp_avg_sq` as the update left them; `grad` the gradient it
    used). adam_combine turns their sums into the hypergradient.

    Every derivative of the update is a combination of a few tensors with coefficients
    shared by all tensors of a step, so per tensor only <G, X> for those X is formed (one
    fused dot each), never the derivative; all scalar algebra happens once per meta step.
    Most X are something / D, so G / D is formed once; in place when the caller frees G
    afterwards anyway (the meta step's hooks), leaving D the only temporary.
    """
    cols = _columns(names, weight_decay)
    denom = exp_avg_sq.sqrt().add_(eps)
    dots = {}
    if "theta" in cols:
        dots["theta"] = _dot(guide_grad, param)  # before G is divided
    g_over_d = guide_grad.div_(denom) if guide_grad_disposable else guide_grad / denom
    dots["dir"] = _dot(g_over_d, exp_avg)  # <G, m'/D>
    if "grad" in cols:
        dots["grad"] = _dot(g_over_d, grad)  # <G, g/D>
    if "beta2" in cols:
        # beta2 x dD/d beta2 = (v' - g^2) / (2 sqrt v'), where v' > 0
        sqrt_v = exp_avg_sq.sqrt()
        safe = torch.where(sqrt_v > 0, sqrt_v, torch.ones_like(sqrt_v))
        d_denom = torch.where(sqrt_v > 0, (exp_avg_sq - grad * grad) / (2 * safe), 0.0)
        dots["beta2"] = _dot(g_over_d, exp_avg * d_denom / denom)  # <G, (m'/D) dD / D>
    if "eps" in cols:
        dots["eps"] = _dot(g_over_d.div_(denom), exp_avg)  # <G, m'/D^2>; last: it divides again
    return torch.stack([dots[c] for c in cols])


def adam_combine(names, rows, step, lr, beta1, beta2, eps, weight_decay):
    """d L_guide / d h for h in names from the (N, R) rows of adam_dot_row (float64)."""
    sums = dict(zip(_columns(names, weight_decay), rows.sum(0).unbind(0)))
    g_dir = sums["dir"]
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    sqrt_bc2 = bc2**0.5
    c = sqrt_bc2 / bc1
    if "theta" in sums:
        # theta enters only as <G, theta> = (<G, theta'> + lr c <G, m'/D>) / (1 - lr wd)
        g_theta = (sums["theta"] + lr * c * g_dir) / (1 - lr * weight_decay)
    out = []
    for name in names:
        if name == "lr":
            out.append(-weight_decay * g_theta - c * g_dir if "theta" in sums else -c * g_dir)
        elif name == "weight_decay":
            out.append(-lr * g_theta)
        elif name == "eps":
            out.append(lr * c * sums["eps"])
        elif name == "beta1":
            # d m'/d b1 = m - g = (m' - g) / b1, recovered from m'
            g_dm = g_dir - sums["grad"]
            out.append(-lr * sqrt_bc2 * (g_dm / (beta1 * bc1) + step * beta1 ** (step - 1) / bc1**2 * g_dir))
        elif name == "beta2":
            d_sqrt_bc2 = -step * beta2 ** (step - 1) / (2 * sqrt_bc2)
            out.append(-lr / bc1 * (d_sqrt_bc2 * g_dir - sqrt_bc2 * sums["beta2"] / beta2))
        else:
            raise KeyError(name)
    return out


class GuidedAdam(GuidedOptimizerBase):
    """fairseq's Adam (decoupled weight decay) with learnable alpha, beta1, beta2, eps, wd."""

    FIXED_HPARAMS = ("beta1", "beta2", "eps", "weight_decay")
    ELEMENTWISE = True

    def __init__(self, params, learned, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, keep_step_grad=False, foreach=True):
        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, learned, keep_step_grad, foreach)

    def update_one(self, p, grad, state, group, hp):
        state["step"] += 1
        adam_step_(p, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], **hp)

    def update_many(self, params, grads, states, group, hp):
        step = advance_steps(states)
        adam_step_foreach_(params, grads, [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], step, **hp)

    def row_one(self, names, guide_grad, p, grad, state, group, hp, disposable=False):
        return adam_dot_row(names, guide_grad, p, grad, state["exp_avg"], state["exp_avg_sq"],
                            hp["eps"], hp["weight_decay"], guide_grad_disposable=disposable)

    def combine_one(self, names, rows, step, group, hp):
        return adam_combine(names, rows, step, **hp)
