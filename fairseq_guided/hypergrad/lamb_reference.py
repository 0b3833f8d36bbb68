"""The slow, obviously-correct twin of lamb.py's update: the LAMB paper's Algorithm 2
written out-of-place, so torch.autograd can differentiate one whole step with respect to
any hyper-parameter (every argument may be a tensor that requires grad). The tests run it
in float64 and hold GuidedLamb's hypergradients to it."""
from __future__ import annotations

import torch


def lamb_reference(theta, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """LAMB paper, Algorithm 2 with phi = identity: returns (theta', m', v', trust)."""
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    r = m_hat / (torch.sqrt(v_hat) + eps)
    u = r + weight_decay * theta
    theta_norm = torch.linalg.vector_norm(theta)
    u_norm = torch.linalg.vector_norm(u)
    if theta_norm > 0 and u_norm > 0:
        trust = theta_norm / u_norm
    else:
        trust = torch.ones((), dtype=theta.dtype)
    return theta - lr * trust * u, m, v, trust
