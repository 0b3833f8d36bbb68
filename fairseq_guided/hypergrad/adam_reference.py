"""The slow, obviously-correct twin of adam.py's update: fairseq's Adam written
out-of-place from its formula, so torch.autograd can differentiate one whole step with
respect to any hyper-parameter (every argument may be a tensor that requires grad). The
tests run it in float64 and hold GuidedAdam's hypergradients to it."""
from __future__ import annotations

import torch


def adam_reference(theta, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """fairseq adam: returns (theta', m', v')."""
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad**2
    m_hat_scale = 1 / (1 - beta1**step)
    v_hat_scale = torch.sqrt(torch.as_tensor(1 - beta2**step, dtype=theta.dtype))
    new_theta = theta * (1 - weight_decay * lr) - lr * v_hat_scale * m_hat_scale * m / (torch.sqrt(v) + eps)
    return new_theta, m, v
