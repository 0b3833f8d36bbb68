"""Hypergradients at edges the engine test's network never reaches (the mutation pass of
2026-12-02, results/mutation-2026-12-02): a LAMB state saved before `trust_from_norms` was
kept, at each trust-ratio edge; second moments exactly zero under a first moment that is
not (a gradient whose square underflows), where the sqrt(v) > 0 guards decide; LAMB
without weight decay, whose update is the Adam ratio itself. Each against float64 autograd
through the reference twins, or a central difference where autograd meets sqrt'(0) x 0."""
import pytest
import torch

from fairseq_guided.hypergrad import OPTIMIZERS
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
from fairseq_guided.hypergrad.reference import adam_reference, lamb_reference

F64 = torch.float64
LR = 0.05
FIXED = dict(beta1=0.8, beta2=0.95, eps=1e-3)
# |g| ~ 1e-170: g^2 underflows to 0 in float64, so v' = 0 while m' = (1 - b1) g is not
TINY = 1e-170


def build(opt, names, params, weight_decay):
    init = {"alpha": 1.1, **FIXED, "weight_decay": weight_decay}
    learned = LearnedHyperParams(names, {n: init[n] for n in names}, {n: 1.0 for n in names},
                                 MetaAdamConfig(lr=0.0))
    optimizer = OPTIMIZERS[opt](params, learned, lr=LR, weight_decay=weight_decay, **FIXED)
    # the values the update uses: the learned ones as they come out of their parameterisation
    values = {**init, **dict(zip(names, learned.values().tolist()))}
    return optimizer, values


def step(optimizer, params, grads):
    """One step of the tensors with a gradient (None: not stepped); returns their pre-step
    tensors and states (a fresh state for a first step)."""
    before, states = [], []
    for p, g in zip(params, grads):
        p.grad = g
        if g is None:
            continue
        state = optimizer.state[p]
        before.append(p.clone())
        states.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()} if state else
                      {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)})
    optimizer.step()
    return before, states


def reference_step(opt, theta, grad, state, values):
    fn = adam_reference if opt == "adam" else lamb_reference
    return fn(theta, grad, state["exp_avg"], state["exp_avg_sq"], state["step"] + 1, values["alpha"] * LR,
              values["beta1"], values["beta2"], values["eps"], values["weight_decay"])[0]


def expected_hypergradient(opt, names, values, before, grads, states, guide):
    """d sum <G, theta'> / d name in float64 through the reference twin, tensor by tensor:
    autograd, or a central difference where autograd gives NaN (sqrt'(0) = inf times a zero
    derivative of v: a second moment exactly 0)."""
    total = torch.zeros(len(names), dtype=F64)
    for theta, g, st, G in zip(before, grads, states, guide):
        leaves = {n: torch.tensor(v, dtype=F64, requires_grad=True) for n, v in values.items()}
        new = reference_step(opt, theta, g, st, leaves)
        part = torch.stack(torch.autograd.grad((G * new).sum(), [leaves[n] for n in names]))
        for i, n in enumerate(names):
            if torch.isnan(part[i]):
                assert (st["exp_avg_sq"] * values["beta2"] + (1 - values["beta2"]) * g * g == 0).all()
                h = 1e-6 * max(abs(values[n]), 1e-3)
                up = (G * reference_step(opt, theta, g, st, {**values, n: values[n] + h})).sum()
                down = (G * reference_step(opt, theta, g, st, {**values, n: values[n] - h})).sum()
                part[i] = (up - down) / (2 * h)
        total += part
    assert torch.isfinite(total).all()
    return total


# -- 1. LAMB: a state saved without trust_from_norms recovers it at every edge --------------


def older_lamb_state(names, weight_decay, with_zero_tensor, seed=3):
    """A LAMB optimizer after two steps (one for the zero tensor: its step from theta = 0
    is the differentiated one), its hypergradient with the flag, and the same with every
    `trust_from_norms` deleted (a state saved before the flag was kept); with the float64
    autograd hypergradient."""
    gen = torch.Generator().manual_seed(seed)
    zero = torch.zeros(3, 4, dtype=F64)                        # no parameter norm
    idle = torch.randn(4, generator=gen, dtype=F64)            # its gradient is always 0
    small = 1e-3 * torch.randn(5, generator=gen, dtype=F64)    # T < 1/2: |theta| << |u|
    scalar = torch.tensor([-0.5], dtype=F64)                   # a one-element update: norm < 1
    busy = torch.randn(2, 3, generator=gen, dtype=F64)
    first = [None, torch.zeros(4, dtype=F64), None, torch.tensor([0.7], dtype=F64),
             torch.randn(2, 3, generator=gen, dtype=F64)]
    grads = [torch.randn(3, 4, generator=gen, dtype=F64), torch.zeros(4, dtype=F64),
             torch.randn(5, generator=gen, dtype=F64), torch.tensor([0.6], dtype=F64),
             torch.randn(2, 3, generator=gen, dtype=F64)]
    keep = slice(0 if with_zero_tensor else 1, None)
    params, first, grads = [zero, idle, small, scalar, busy][keep], first[keep], grads[keep]
    optimizer, values = build("lamb", names, params, weight_decay)
    step(optimizer, params, first)
    before, states = step(optimizer, params, grads)
    guide = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
    with_flag = optimizer.hypergradient([g.clone() for g in guide])
    flags = [bool(optimizer.state[p]["trust_from_norms"]) for p in params]
    update_norms = [b.norm() / optimizer.state[p]["trust_ratio"] for p, b in zip(params, before)]
    assert optimizer.state[params[-3]]["trust_ratio"] < 0.5  # the small tensor's
    for p in params:
        del optimizer.state[p]["trust_from_norms"]
    without = optimizer.hypergradient([g.clone() for g in guide])
    expected = expected_hypergradient("lamb", names, values, before, grads, states, guide)
    return flags, update_norms, with_flag, without, expected


@pytest.mark.parametrize("weight_decay", [0.0, 0.05], ids=["no-wd", "wd"])
def test_lamb_state_without_the_trust_flag_at_the_trust_ratio_edges(weight_decay):
    """An older LAMB state (no trust_from_norms) recovers the flag at each trust-ratio edge: autograd's result."""
    # edges: a tensor at zero (no weight decay; with it, the test below), an update of norm
    # 0 (idle, no weight decay) and one of norm below 1 (a scalar)
    names = ["alpha", "beta1", "beta2", "eps", "weight_decay"]
    with_zero = weight_decay == 0
    flags, update_norms, with_flag, without, expected = older_lamb_state(names, weight_decay, with_zero)
    assert flags == [False] * with_zero + [weight_decay > 0, True, True, True]
    assert 0 < update_norms[-2] < 1  # the scalar's ||u|| = ||theta|| / T
    assert torch.equal(without, with_flag)
    torch.testing.assert_close(without, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("names", [["alpha", "beta1", "beta2", "eps", "weight_decay"], ["alpha", "eps"]],
                         ids=["wd-learned", "wd-fixed"])
def test_lamb_state_without_the_trust_flag_at_a_zero_tensor_with_weight_decay(names):
    """With weight decay, an older LAMB state's tensor stepped from 0 gives the flag's hypergradient
    (the rebuilt pre-step tensor is ~1e-17, not 0: a flag taken from `> 0` was wrong)."""
    flags, _, with_flag, without, expected = older_lamb_state(names, 0.05, True)
    assert flags[0] is False
    torch.testing.assert_close(with_flag, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(without, with_flag, rtol=1e-9, atol=1e-12)


# -- 2. second moments exactly zero under a first moment that is not ----------------------


def tiny_gradients(gen, shape, steps):
    return [TINY * torch.randn(shape, generator=gen, dtype=F64) for _ in range(steps)]


def test_adam_hypergradient_with_second_moments_exactly_zero():
    """Adam's hypergradient where v' = 0 but m', G are not (g^2 underflows) matches float64 autograd/differences."""
    # a bias at its zero init whose gradients underflow when squared: the derivative of
    # sqrt(v') is 0 there, beta2 acts only through the bias correction
    names = ["alpha", "beta1", "beta2", "eps"]
    gen = torch.Generator().manual_seed(4)
    bias = torch.zeros(5, dtype=F64)
    optimizer, values = build("adam", names, [bias], 0.0)
    first, grad = tiny_gradients(gen, (5,), 2)
    step(optimizer, [bias], [first])
    before, states = step(optimizer, [bias], [grad])
    state = optimizer.state[bias]
    assert (state["exp_avg_sq"] == 0).all() and (state["exp_avg"] != 0).all()
    guide = [torch.randn(5, generator=gen, dtype=F64)]
    assert (guide[0] != 0).all()
    fast = optimizer.hypergradient([g.clone() for g in guide])
    expected = expected_hypergradient("adam", names, values, before, [grad], states, guide)
    assert (expected != 0).all()
    # every entry is ~1e-167: relative tolerances only
    torch.testing.assert_close(fast, expected, rtol=1e-6, atol=0)


def test_lamb_hypergradient_with_second_moments_exactly_zero():
    """LAMB's hypergradient where v' = 0 but m' and G are not: beta2's is exactly 0, the others match autograd."""
    # gradients that underflow when squared: beta2 does not enter the step at all while the
    # trust ratio still scales a full step; weight decay keeps u off the direction of m'
    names = ["alpha", "beta1", "beta2", "eps"]
    gen = torch.Generator().manual_seed(5)
    theta = torch.randn(6, generator=gen, dtype=F64)
    optimizer, values = build("lamb", names, [theta], 0.05)
    first, grad = tiny_gradients(gen, (6,), 2)
    step(optimizer, [theta], [first])
    before, states = step(optimizer, [theta], [grad])
    state = optimizer.state[theta]
    assert (state["exp_avg_sq"] == 0).all() and (state["exp_avg"] != 0).all()
    assert bool(state["trust_from_norms"])
    guide = [torch.randn(6, generator=gen, dtype=F64)]
    assert (guide[0] != 0).all()
    fast = optimizer.hypergradient([g.clone() for g in guide])
    expected = expected_hypergradient("lamb", names, values, before, [grad], states, guide)
    beta2 = names.index("beta2")
    assert expected[beta2] == 0 and fast[beta2] == 0
    # alpha is O(1), beta1 and eps ~1e-165: relative tolerances, name by name
    torch.testing.assert_close(fast, expected, rtol=1e-7, atol=0)


# -- 3. LAMB without weight decay: the update is the Adam ratio itself -----------------------


def test_lamb_without_weight_decay_reuses_the_update_dots_and_its_trust_flags():
    """LAMB without weight decay (u is the Adam ratio) combines by each trust flag, not by the sign of <G, u>."""
    # weight decay 0 and not learned: the ratio's columns reuse <G, u> and <u, u>. A tensor
    # at zero with <G, u> > 0 (no norm term) and one whose G opposes its update (<G, u> < 0,
    # a norm term), against float64 autograd
    names = ["alpha", "beta1", "beta2", "eps"]
    gen = torch.Generator().manual_seed(6)
    zero = torch.zeros(3, 4, dtype=F64)
    busy = torch.randn(2, 3, generator=gen, dtype=F64)
    optimizer, values = build("lamb", names, [zero, busy], 0.0)
    step(optimizer, [zero, busy], [None, torch.randn(2, 3, generator=gen, dtype=F64)])
    grads = [torch.randn(3, 4, generator=gen, dtype=F64), torch.randn(2, 3, generator=gen, dtype=F64)]
    before, states = step(optimizer, [zero, busy], grads)
    guide = [grads[0] + 0.1 * torch.randn(3, 4, generator=gen, dtype=F64),
             -grads[1] + 0.1 * torch.randn(2, 3, generator=gen, dtype=F64)]
    lr = values["alpha"] * LR
    for p, theta, G, flag, sign in zip([zero, busy], before, guide, [False, True], [1, -1]):
        state = optimizer.state[p]
        assert bool(state["trust_from_norms"]) == flag
        update = (theta - p) / (lr * state["trust_ratio"])
        assert sign * torch.dot(G.reshape(-1), update.reshape(-1)) > 0
    fast = optimizer.hypergradient([g.clone() for g in guide])
    expected = expected_hypergradient("lamb", names, values, before, grads, states, guide)
    assert (expected.abs() > 1e-6).all()
    torch.testing.assert_close(fast, expected, rtol=1e-9, atol=1e-12)
