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

HYPERPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay")


def _adam_ratio(exp_avg, exp_avg_sq, step, beta1, beta2, eps):
    """m^, sqrt(v^) and m^ / (sqrt(v^) + eps)."""
    m_hat = exp_avg / (1 - beta1**step)
    sqrt_v = (exp_avg_sq / (1 - beta2**step)).sqrt_()
    return m_hat, sqrt_v, m_hat / (sqrt_v + eps)


def _trust_ratio(param_norm, update_norm):
    ok = (param_norm > 0) & (update_norm > 0)
    return torch.where(ok, param_norm / torch.where(ok, update_norm, torch.ones_like(update_norm)), 1.0)


def lamb_step_(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update one tensor in place; returns its trust ratio (0-d tensor) for the state."""
    add_scaled_(exp_avg.mul_(beta1), grad, 1 - beta1)
    add_scaled_product_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)
    _, _, ratio = _adam_ratio(exp_avg, exp_avg_sq, step, beta1, beta2, eps)
    update = ratio + weight_decay * param
    trust = _trust_ratio(param.norm(), update.norm())
    param.sub_(lr * trust * update)
    return trust


def lamb_step_foreach_(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
                       weight_decay):
    """lamb_step_ for lists of tensors that share device, dtype and step count; returns
    their trust ratios as one (N,) tensor. The per-tensor norms come from one foreach
    kernel and the trust ratios stay on the device."""
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
    trust = _trust_ratio(param_norms, update_norms)
    torch._foreach_mul_(updates, list((-lr * trust).unbind(0)))
    torch._foreach_add_(params, updates)
    return trust


def lamb_hyper_dots(names, guide_grad, param, grad, exp_avg, exp_avg_sq, step, trust, lr, beta1,
                    beta2, eps, weight_decay):
    """<guide_grad, d theta'/d h> for h in names, from the post-step tensors and trust ratio.

    theta' = theta - lr T u with u = ratio + wd theta gives u = (ratio + wd theta') /
    (1 - wd lr T): the update is recovered without the pre-step parameter, which is
    formed only when another name than lr needs the trust ratio's derivative.
    """
    m_hat, sqrt_v, ratio = _adam_ratio(exp_avg, exp_avg_sq, step, beta1, beta2, eps)
    if is_number(weight_decay) and weight_decay == 0:
        update = ratio
    else:
        update = (ratio + weight_decay * param) / (1 - weight_decay * lr * trust)
    g_dot_u = _dot(guide_grad, update)
    out = []
    if any(name != "lr" for name in names):
        theta = param + lr * trust * update
        update_sq = _dot(update, update)
        # T varies with the hyper-parameter only when it came from the two norms.
        uses_norms = (theta.norm() > 0) & (update_sq > 0)
    for name in names:
        if name == "lr":
            out.append(-trust * g_dot_u)
            continue
        if name == "weight_decay":
            du = theta
        elif name == "eps":
            du = -m_hat / (sqrt_v + eps) ** 2
        elif name == "beta1":
            bc1 = 1 - beta1**step
            dm = (exp_avg - grad) / beta1
            du = (dm / bc1 + exp_avg * step * beta1 ** (step - 1) / bc1**2) / (sqrt_v + eps)
        elif name == "beta2":
            bc2 = 1 - beta2**step
            dv = (exp_avg_sq - grad * grad) / beta2
            dv_hat = dv / bc2 + exp_avg_sq * step * beta2 ** (step - 1) / bc2**2
            safe = torch.where(sqrt_v > 0, sqrt_v, torch.ones_like(sqrt_v))
            d_sqrt = torch.where(sqrt_v > 0, dv_hat / (2 * safe), 0.0)
            du = -m_hat / (sqrt_v + eps) ** 2 * d_sqrt
        else:
            raise KeyError(name)
        g_dot_du = _dot(guide_grad, du)
        # d(T u) = T (du - u <u, du> / ||u||^2) when T = ||theta|| / ||u||
        norm_term = torch.where(
            uses_norms, g_dot_u * _dot(update, du) / torch.where(uses_norms, update_sq, 1.0), 0.0
        )
        out.append(-lr * trust * (g_dot_du - norm_term))
    return out
