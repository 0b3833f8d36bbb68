"""LAMB (You et al. 2019, Algorithm 2) and the derivative of its update.

    m' = b1 m + (1 - b1) g,  v' = b2 v + (1 - b2) g^2,  m^ = m'/(1-b1^t),  v^ = v'/(1-b2^t)
    u  = m^ / (sqrt(v^) + eps) + wd theta
    T  = ||theta|| / ||u||   (1 when either norm is 0)
    theta' = theta - lr T u

The trust ratio T of each tensor is kept in its state: with it the pre-step parameter
can be recovered exactly from theta'.
"""
from __future__ import annotations

import torch

from ._ops import add_scaled_, add_scaled_product_, is_number
from ._ops import dot as _dot
from ._ops import foreach_ema_, foreach_ema_square_
from .base import GuidedOptimizerBase, advance_steps



def _adam_ratio(exp_avg, exp_avg_sq, step, beta1, beta2, eps):
    """m^ / (sqrt(v^) + eps) and its denominator."""
    denom = (exp_avg_sq / (1 - beta2**step)).sqrt_().add_(eps)
    return exp_avg / (1 - beta1**step) / denom, denom


def _trust_ratio(param_norm, update_norm):
    """T, and whether it came from the two norms (else it is 1 and has no derivative)."""
    ok = (param_norm > 0) & (update_norm > 0)
    return torch.where(ok, param_norm / torch.where(ok, update_norm, torch.ones_like(update_norm)), 1.0), ok


def lamb_step_(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update one tensor in place; returns its trust ratio and whether the norms set it
    (0-d tensors, for the state)."""
    add_scaled_(exp_avg.mul_(beta1), grad, 1 - beta1)
    add_scaled_product_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)
    ratio, _ = _adam_ratio(exp_avg, exp_avg_sq, step, beta1, beta2, eps)
    update = ratio + weight_decay * param
    trust, from_norms = _trust_ratio(param.norm(), update.norm())
    param.sub_(lr * trust * update)
    return trust, from_norms


def lamb_step_foreach_(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
                       weight_decay):
    """lamb_step_ for lists of tensors that share device, dtype and step count; returns
    their trust ratios and flags as (N,) tensors. The per-tensor norms come from one
    foreach kernel and the trust ratios stay on the device."""
    foreach_ema_(exp_avgs, grads, beta1)
    foreach_ema_square_(exp_avg_sqs, grads, beta2)
    updates = torch._foreach_div(exp_avgs, 1 - beta1**step)  # m^, becomes u below
    denoms = torch._foreach_div(exp_avg_sqs, 1 - beta2**step)
    torch._foreach_sqrt_(denoms)
    torch._foreach_add_(denoms, eps)
    torch._foreach_div_(updates, denoms)
    del denoms
    if is_number(weight_decay):
        if weight_decay != 0:
            torch._foreach_add_(updates, params, alpha=weight_decay)
    else:
        torch._foreach_add_(updates, torch._foreach_mul(params, weight_decay))
    param_norms = torch.stack(torch._foreach_norm(params))
    update_norms = torch.stack(torch._foreach_norm(updates))
    trust, from_norms = _trust_ratio(param_norms, update_norms)
    torch._foreach_mul_(updates, list((-lr * trust).unbind(0)))
    torch._foreach_add_(params, updates)
    return trust, from_norms


# columns of a row beyond [T, from_norms, <G,u>, <u,u>]: <G,X>, <u,X> for each X a name needs
_EXTRA = {"weight_decay": ("theta'",), "beta1": ("ratio", "grad/D"), "eps": ("ratio/D",),
          "beta2": ("beta2",)}


def _extra_columns(names):
    return [x for n in names if n != "lr" for x in _EXTRA[n]]


def lamb_dot_row(names, guide_grad, param, grad, exp_avg, exp_avg_sq, step, trust, from_norms,
                 lr, beta1, beta2, eps, weight_decay):
    """One tensor's dot products with G (and its trust ratio), from the post-step tensors;
    lamb_combine turns the rows into the hypergradient.

    theta' = theta - lr T u with u = ratio + wd theta gives u = (ratio + wd theta') /
    (1 - wd lr T): the update is recovered without the pre-step parameter. Each
    derivative du is a combination of a few tensors X, so only <G, X> and <u, X> (for
    the trust ratio's derivative) are formed.
    """
    G = guide_grad
    ratio, denom = _adam_ratio(exp_avg, exp_avg_sq, step, beta1, beta2, eps)
    if is_number(weight_decay) and weight_decay == 0:
        update = ratio
    else:
        update = (ratio + weight_decay * param) / (1 - weight_decay * lr * trust)
    g_u, u_u = _dot(G, update), _dot(update, update)
    if from_norms is None:  # a state saved before the flag was kept
        # A flag of False leaves T exactly 1; T = 1 from the norms means |theta| = |u|. The
        # rebuilt pre-step tensor is only near 0 (rounding, with weight decay), so it is
        # compared with half of |u| rather than with 0.
        pre_norm = (param + lr * trust * update).norm()
        from_norms = ((trust != 1) | (pre_norm > 0.5 * u_u.sqrt())) & (u_u > 0)
    row = [trust.to(g_u.dtype), from_norms.to(g_u.dtype), g_u, u_u]
    for col in _extra_columns(names):
        if col == "theta'":
            x = param
        elif col == "ratio" and update is ratio:
            row += [g_u, u_u]  # without weight decay u is the ratio: the dots are known
            continue
        elif col == "ratio":
            x = ratio
        elif col == "grad/D":
            x = grad / denom
        elif col == "ratio/D":
            x = ratio / denom
        else:  # beta2: d sqrt(v^) / d beta2 x ratio / D
            bc2 = 1 - beta2**step
            sqrt_v = (exp_avg_sq / bc2).sqrt()
            dv_hat = (exp_avg_sq - grad * grad) / (beta2 * bc2) + exp_avg_sq * step * beta2 ** (step - 1) / bc2**2
            safe = torch.where(sqrt_v > 0, sqrt_v, torch.ones_like(sqrt_v))
            x = ratio / denom * torch.where(sqrt_v > 0, dv_hat / (2 * safe), 0.0)
        row += [_dot(G, x), _dot(update, x)]
    return torch.stack(row)


def lamb_combine(names, rows, step, lr, beta1, beta2, eps, weight_decay):
    """d L_guide / d h for h in names from the (N, R) rows of lamb_dot_row (float64),
    vectorised over the tensors (each has its own trust ratio)."""
    trust, from_norms, g_u, u_u = rows[:, 0], rows[:, 1] > 0, rows[:, 2], rows[:, 3]
    extra = {}
    for i, col in enumerate(_extra_columns(names)):
        extra[col] = (rows[:, 4 + 2 * i], rows[:, 5 + 2 * i])  # <G, X>, <u, X>
    out = []
    for name in names:
        if name == "lr":
            out.append((-trust * g_u).sum())
            continue
        if name == "weight_decay":  # du = theta = theta' + lr T u
            g_x, u_x = extra["theta'"]
            g_du, u_du = g_x + lr * trust * g_u, u_x + lr * trust * u_u
        elif name == "beta1":  # du = (a m' - b g) / D, m'/D = bc1 ratio
            bc1 = 1 - beta1**step
            b = 1 / (beta1 * bc1)
            a = b + step * beta1 ** (step - 1) / bc1**2
            (g_r, u_r), (g_g, u_g) = extra["ratio"], extra["grad/D"]
            g_du, u_du = a * bc1 * g_r - b * g_g, a * bc1 * u_r - b * u_g
        elif name == "eps":  # du = -ratio / D
            g_du, u_du = (-x for x in extra["ratio/D"])
        elif name == "beta2":
            g_du, u_du = (-x for x in extra["beta2"])
        else:
            raise KeyError(name)
        # d(T u) = T (du - u <u, du> / ||u||^2) when T = ||theta|| / ||u||
        norm_term = torch.where(from_norms, g_u * u_du / torch.where(from_norms, u_u, 1.0), 0.0)
        out.append((-lr * trust * (g_du - norm_term)).sum())
    return out


class GuidedLamb(GuidedOptimizerBase):
    """LAMB (per-tensor trust ratio) with learnable alpha, beta1, beta2, eps, wd."""

    FIXED_HPARAMS = ("beta1", "beta2", "eps", "weight_decay")

    def __init__(self, params, learned, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6,
                 weight_decay=0.0, keep_step_grad=False, foreach=True):
        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, learned, keep_step_grad, foreach)

    def update_one(self, p, grad, state, group, hp):
        state["step"] += 1
        state["trust_ratio"], state["trust_from_norms"] = lamb_step_(
            p, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], **hp
        )

    def update_many(self, params, grads, states, group, hp):
        step = advance_steps(states)
        trust, from_norms = lamb_step_foreach_(params, grads, [s["exp_avg"] for s in states],
                                               [s["exp_avg_sq"] for s in states], step, **hp)
        for state, ratio, flag in zip(states, trust.unbind(0), from_norms.unbind(0)):
            state["trust_ratio"], state["trust_from_norms"] = ratio, flag

    def row_one(self, names, guide_grad, p, grad, state, group, hp, disposable=False):
        return lamb_dot_row(names, guide_grad, p, grad, state["exp_avg"], state["exp_avg_sq"],
                            state["step"], state["trust_ratio"], state.get("trust_from_norms"), **hp)

    def combine_one(self, names, rows, step, group, hp):
        return lamb_combine(names, rows, step, **hp)
