"""Guided LAMB where its trust ratio has edges the engine test's network never reaches: a
tensor at zero (no parameter norm: the ratio is 1 and has no derivative), a tensor whose
gradient is always zero (no update norm without weight decay; second moments at exactly
zero, where the derivative of the sqrt must not divide by it). Update and hypergradient
against float64 autograd through the reference twin."""
import pytest
import torch

from fairseq_guided.hypergrad import OPTIMIZERS
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
from fairseq_guided.hypergrad.lamb_reference import lamb_reference

LR = 0.05
NAMES = ["alpha", "beta1", "beta2", "eps", "weight_decay"]


def start(seed):
    gen = torch.Generator().manual_seed(seed)
    zero = torch.zeros(3, 4, dtype=torch.float64)              # no parameter norm
    idle = torch.randn(4, generator=gen, dtype=torch.float64)  # its gradient is always zero
    busy = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    return [zero, idle, busy]


def gradients(seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.zeros(4, dtype=torch.float64),
            torch.randn(2, 3, generator=gen, dtype=torch.float64)]


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "per-tensor"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05], ids=["no-wd", "wd"])
def test_trust_ratio_edges_match_autograd(weight_decay, foreach):
    init = {"alpha": 1.1, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": weight_decay}
    params = start(0)
    learned = LearnedHyperParams(NAMES, init, {n: 1.0 for n in NAMES}, MetaAdamConfig(lr=0.0))
    optimizer = OPTIMIZERS["lamb"](params, learned, lr=LR, beta1=0.8, beta2=0.95, eps=1e-3,
                                   weight_decay=weight_decay, foreach=foreach)
    # the zero tensor's first step is the one without a parameter norm
    grads = gradients(1)
    for p, g in zip(params, grads):
        p.grad = g
    before = [p.clone() for p in params]
    states = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()}
              or {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)} for p in params]
    optimizer.step()
    assert optimizer.state[params[0]]["trust_ratio"].item() == 1.0  # from no parameter norm
    assert optimizer.state[params[1]]["trust_ratio"].item() == (1.0 if weight_decay == 0 else
                                                                 pytest.approx(1 / weight_decay))
    guide = gradients(2)
    fast = optimizer.hypergradient([g.clone() for g in guide])

    leaves = {n: torch.tensor(init[n], dtype=torch.float64, requires_grad=True) for n in NAMES}
    expected = torch.zeros(len(NAMES), dtype=torch.float64)
    for i, (theta, g, st, G, p) in enumerate(zip(before, grads, states, guide, params)):
        new = lamb_reference(theta, g, st["exp_avg"], st["exp_avg_sq"], st["step"] + 1, leaves["alpha"] * LR,
                             leaves["beta1"], leaves["beta2"], leaves["eps"], leaves["weight_decay"])[0]
        torch.testing.assert_close(p, new.detach(), rtol=1e-12, atol=1e-14)
        part = torch.stack(torch.autograd.grad((G * new).sum(), [leaves[n] for n in NAMES], allow_unused=False))
        if i == 1:
            # v = beta2 * 0 + (1 - beta2) * 0 for every beta2, so d/d beta2 is 0; autograd
            # multiplies sqrt'(0) = inf by that 0 and gets NaN (the engine must not)
            assert torch.isnan(part[2]) and torch.isfinite(part[[0, 1, 3, 4]]).all()
            part[2] = 0.0
        expected += part
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast.to(torch.float64), expected, rtol=1e-9, atol=1e-12)
