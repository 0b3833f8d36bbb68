"""The slow, obviously-correct twin of adafactor.py's update: Adafactor as fairseq runs
it, written out-of-place, so torch.autograd can differentiate one whole step with respect
to any hyper-parameter (every argument may be a tensor that requires grad). The tests run
it in float64 and hold GuidedAdafactor's hypergradients to it."""
from __future__ import annotations

import torch


def adafactor_reference(theta, grad, state, lr, beta1, weight_decay, *, eps1, eps2,
                        clip_threshold, decay_rate, scale_parameter):
    """Shazeer & Stern (2018) as fairseq runs it: returns (theta', new_state)."""
    step = state["step"] + 1
    new = {"step": step}
    rms_theta = torch.sqrt(torch.mean(theta**2))
    new["RMS"] = rms_theta
    lr_p = lr * torch.clamp(rms_theta, min=eps2) if scale_parameter else lr
    beta2t = 1.0 - step**decay_rate
    sq = grad**2 + eps1
    if theta.dim() >= 2:
        row = beta2t * state["exp_avg_sq_row"] + (1 - beta2t) * sq.mean(dim=-1)
        col = beta2t * state["exp_avg_sq_col"] + (1 - beta2t) * sq.mean(dim=-2)
        new["exp_avg_sq_row"], new["exp_avg_sq_col"] = row, col
        # V ~ row col^T / sum(row) ; each row's estimate normalised by the row mean
        v_est = (row / row.mean(dim=-1, keepdim=True)).unsqueeze(-1) * col.unsqueeze(-2)
    else:
        v_est = beta2t * state["exp_avg_sq"] + (1 - beta2t) * sq
        new["exp_avg_sq"] = v_est
    u = grad / torch.sqrt(v_est)
    u = u / torch.clamp(torch.sqrt(torch.mean(u**2)) / clip_threshold, min=1.0)
    u = lr_p * u
    if beta1 is not None:
        u = beta1 * state["exp_avg"] + (1 - beta1) * u
        new["exp_avg"] = u
    return theta * (1 - weight_decay * lr_p) - u, new
