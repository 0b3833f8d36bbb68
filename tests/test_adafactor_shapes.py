"""Guided Adafactor beyond the engine test's matrices and vectors: a rank-3 tensor (the
factored moments keep the leading axes), update clipping that bites (clip_threshold below
the update's RMS), weight decay learned from zero. The update is held to fairseq's own
Adafactor, the hypergradient to float64 autograd through the reference twin."""
import pytest
import torch

from fairseq_guided.hypergrad import OPTIMIZERS
from fairseq_guided.hypergrad.adafactor import _normalised_update, adafactor_combine, rms
from fairseq_guided.hypergrad.adafactor_reference import adafactor_reference
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig

LR = 0.03
SHAPES = [(2, 3, 4), (3, 4), (4,)]
FIXED = dict(eps1=1e-30, eps2=1e-3, clip_threshold=0.3, decay_rate=-0.8)


def tensors(seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def guided(params, names, init, beta1, weight_decay, foreach, scale_parameter=True):
    learned = LearnedHyperParams(names, init, {n: 1.0 for n in names}, MetaAdamConfig(lr=0.0))
    return OPTIMIZERS["adafactor"](params, learned, lr=LR, beta1=beta1, weight_decay=weight_decay,
                                   scale_parameter=scale_parameter, foreach=foreach, **FIXED)


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "per-tensor"])
@pytest.mark.parametrize("beta1", [None, 0.8], ids=["no-momentum", "beta1"])
def test_update_equals_stock_adafactor_on_each_tensor(beta1, foreach):
    """Each tensor against stock Adafactor run on it alone (stock compounds the parameter
    scale across the tensors of one group; see test_hypergrad_engine)."""
    from fairseq.optim.adafactor import Adafactor

    ours = [p.clone() for p in tensors(0)]
    stock = [p.clone() for p in tensors(0)]
    optimizer = guided(ours, ["alpha"], {"alpha": 1.0}, beta1, 0.1, foreach)
    stocks = [Adafactor([p], lr=LR, eps=(FIXED["eps1"], FIXED["eps2"]), clip_threshold=FIXED["clip_threshold"],
                        decay_rate=FIXED["decay_rate"], beta1=beta1, weight_decay=0.1, scale_parameter=True,
                        relative_step=False, warmup_init=False) for p in stock]
    for step in range(4):
        for a, b, g in zip(ours, stock, tensors(10 + step)):
            a.grad, b.grad = g.clone(), g.clone()
        optimizer.step()
        for opt in stocks:
            opt.param_groups[0]["lr"] = LR
            opt.step()
        for a, b in zip(ours, stock):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    for p, twin, opt in zip(ours, stock, stocks):  # in the parameters' dtype and layout, under stock's names
        state = optimizer.state[p]
        moments = {"exp_avg_sq_row", "exp_avg_sq_col"} if p.dim() >= 2 else {"exp_avg_sq"}
        assert set(state) == {"step", "RMS"} | moments | ({"exp_avg"} if beta1 else set()) == set(opt.state[twin])
        assert all(t.dtype == torch.float64 for t in state.values() if torch.is_tensor(t))
        if p.dim() >= 2:
            assert state["exp_avg_sq_row"].shape == p.shape[:-1]
            assert state["exp_avg_sq_col"].shape == p.shape[:-2] + p.shape[-1:]
    # the clipping bit: every tensor's normalised update is above the threshold
    assert all(rms(_normalised_update(p.grad, optimizer.state[p])) > 2 * FIXED["clip_threshold"] for p in ours)


def _reference_hypergradient(names, hp, before, grads, states, guide):
    leaves = {n: torch.tensor(float(hp[n]), dtype=torch.float64, requires_grad=True) for n in names}
    values = {**hp, **leaves}
    loss = 0.0
    new_params = []
    for theta, g, st, G in zip(before, grads, states, guide):
        new, _ = adafactor_reference(theta, g, st, values["alpha"] * LR, values["beta1"], values["weight_decay"],
                                     scale_parameter=True, **FIXED)
        loss = loss + (G * new).sum()
        new_params.append(new.detach())
    return torch.stack(torch.autograd.grad(loss, [leaves[n] for n in names])), new_params


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "per-tensor"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05], ids=["wd-from-0", "wd"])
def test_hypergradient_on_a_rank3_tensor_with_clipping_matches_autograd(weight_decay, foreach):
    names = ["alpha", "beta1", "weight_decay"]
    init = {"alpha": 1.2, "beta1": 0.8, "weight_decay": weight_decay}
    params = tensors(0)
    optimizer = guided(params, names, init, 0.8, weight_decay, foreach)
    for step in range(3):
        for p, g in zip(params, tensors(10 + step)):
            p.grad = g
        optimizer.step()
    grads = tensors(20)
    for p, g in zip(params, grads):
        p.grad = g
    before = [p.clone() for p in params]
    states = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()} for p in params]
    optimizer.step()
    guide = tensors(30)
    fast = optimizer.hypergradient([g.clone() for g in guide])
    expected, new_params = _reference_hypergradient(names, init, before, grads, states, guide)
    for p, ref in zip(params, new_params):
        torch.testing.assert_close(p, ref, rtol=1e-12, atol=1e-14)
    assert (expected.abs() > 1e-6).all(), expected
    torch.testing.assert_close(fast.to(torch.float64), expected, rtol=1e-9, atol=1e-12)


def test_learning_beta1_without_a_first_moment_is_refused():
    """The guided_adafactor wrapper refuses it at start-up; the math says why itself."""
    rows = torch.ones(2, 1, dtype=torch.float64)  # two tensors, the one "scaled" column
    with pytest.raises(ValueError, match="^beta1 is learned only when Adafactor keeps a first moment$"):
        adafactor_combine(["beta1"], rows, LR, None, 0.0, scale_parameter=False)
    assert adafactor_combine(["lr"], rows, LR, None, 0.0, scale_parameter=False)[0].item() == -2.0


def test_float32_tensors_keep_float32_state_and_a_float32_lr_scale():
    params = tensors(0, torch.float32)
    optimizer = guided(params, ["alpha"], {"alpha": 1.0}, 0.8, 0.0, False)
    for p, g in zip(params, tensors(1, torch.float32)):
        p.grad = g
    optimizer.step()
    for p in params:
        assert all(t.dtype == torch.float32 for t in optimizer.state[p].values() if torch.is_tensor(t))
    assert torch.isfinite(optimizer.hypergradient(tensors(2, torch.float32))).all()
