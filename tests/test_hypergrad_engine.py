"""The engine's hypergradients against torch.autograd through a float64 re-implementation
of one whole step (reference.py) and against central finite differences, for every
optimizer x learnable hyper-parameter, on a small two-layer network."""
import copy

import pytest
import torch

from fairseq_guided.hypergrad import reference
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
from fairseq_guided.hypergrad import OPTIMIZERS

SCHED_LR = 0.02
FIXED = {
    "adam": dict(beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.05),
    "lamb": dict(beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.05),
    "adafactor": dict(beta1=0.8, weight_decay=0.05, scale_parameter=True, eps2=1e-3,
                      clip_threshold=1.0, decay_rate=-0.8, eps1=1e-30),
}
CASES = [(opt, name) for opt, cls in OPTIMIZERS.items() for name in cls.learnable()]
# foreach=True batches the update over tensors (the default); False loops tensor by tensor
UPDATE_PATHS = pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "per-tensor"])


def make_problem(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 4), (5,), (3, 5), (3,)]
    params = [torch.randn(s, generator=gen, dtype=torch.float64).mul_(0.5) for s in shapes]
    batches = [(torch.randn(16, 4, generator=gen, dtype=torch.float64),
                torch.randn(16, 3, generator=gen, dtype=torch.float64)) for _ in range(6)]
    params = [p.to(dtype).requires_grad_() for p in params]
    batches = [(x.to(dtype), y.to(dtype)) for x, y in batches]
    return params, batches


def loss_fn(params, batch):
    w1, b1, w2, b2 = params
    x, y = batch
    h = torch.tanh(x @ w1.T + b1)
    return ((h @ w2.T + b2 - y) ** 2).mean()


def grads_at(params, batch):
    return torch.autograd.grad(loss_fn(params, batch), params)


def build(opt, names, params, foreach=True):
    fixed = FIXED[opt]
    init = {"alpha": 1.3, **{k: v for k, v in fixed.items() if k in OPTIMIZERS[opt].learnable()}}
    learned = LearnedHyperParams(names, init, {n: 1.0 for n in names}, MetaAdamConfig())
    return OPTIMIZERS[opt](params, learned, lr=SCHED_LR, foreach=foreach, **fixed)


def warmed_up(opt, names, dtype, foreach=True, builder=build):
    """Optimizer after 3 real steps, the next training gradient set on .grad."""
    params, batches = make_problem(dtype)
    optimizer = builder(opt, names, params, foreach)
    for batch in batches[:3]:
        for p, g in zip(params, grads_at(params, batch)):
            p.grad = g
        optimizer.step()
    for p, g in zip(params, grads_at(params, batches[3])):
        p.grad = g
    return optimizer, params, batches


def reference_guidance_loss(opt, params_before, grads, states, hp):
    """L_guide after one reference step from the saved pre-step tensors."""
    new = []
    for theta, g, st in zip(params_before, grads, states):
        lr = hp["alpha"] * SCHED_LR
        if opt == "adafactor":
            kw = {k: FIXED[opt][k] for k in ("eps1", "eps2", "clip_threshold", "decay_rate", "scale_parameter")}
            theta_new, _ = reference.adafactor_reference(theta, g, st, lr, hp["beta1"], hp["weight_decay"], **kw)
        else:
            fn = reference.adam_reference if opt == "adam" else reference.lamb_reference
            theta_new = fn(theta, g, st["exp_avg"], st["exp_avg_sq"], st["step"] + 1, lr,
                           hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"])[0]
        new.append(theta_new)
    return new


def run_case(opt, names, dtype, foreach=True):
    optimizer, params, batches = warmed_up(opt, names, dtype, foreach)
    before = [p.detach().to(torch.float64).clone() for p in params]
    grads = [p.grad.to(torch.float64).clone() for p in params]
    states = [{k: (v.to(torch.float64).clone() if torch.is_tensor(v) else v)
               for k, v in optimizer.state[p].items()} for p in params]
    values = dict(zip(names, optimizer.learned.values().tolist()))
    hp = {"alpha": 1.0, **{k: v for k, v in FIXED[opt].items()}}
    hp.update(values)

    optimizer.step()
    guide = batches[5]
    fast = optimizer.hypergradient(grads_at(params, guide)).tolist()

    def guide_loss_of(hp_values):
        new = reference_guidance_loss(opt, before, grads, states, hp_values)
        return loss_fn(new, (guide[0].to(torch.float64), guide[1].to(torch.float64))), new

    leaves = {n: torch.tensor(float(hp[n]), dtype=torch.float64, requires_grad=True) for n in names}
    loss, new_params = guide_loss_of({**hp, **leaves})
    for fast_p, ref_p in zip(params, new_params):  # the two updates agree
        torch.testing.assert_close(fast_p.detach().to(torch.float64), ref_p.detach(),
                                   rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-7)
    autograd = [g.item() for g in torch.autograd.grad(loss, [leaves[n] for n in names])]

    finite_diff = []
    for n in names:
        h = 1e-6 * max(abs(float(hp[n])), 1e-3)
        up = guide_loss_of({**hp, n: float(hp[n]) + h})[0].item()
        down = guide_loss_of({**hp, n: float(hp[n]) - h})[0].item()
        finite_diff.append((up - down) / (2 * h))
    return fast, autograd, finite_diff


def rel_err(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


@UPDATE_PATHS
@pytest.mark.parametrize("opt,name", CASES, ids=[f"{o}-{n}" for o, n in CASES])
def test_hypergradient_float64_matches_autograd_and_finite_differences(opt, name, foreach):
    fast, autograd, fd = run_case(opt, [name], torch.float64, foreach)
    assert abs(autograd[0]) > 1e-8, "degenerate case: the hypergradient is zero"
    assert rel_err(fast[0], autograd[0]) <= 1e-6, (fast, autograd)
    assert rel_err(fd[0], autograd[0]) <= 1e-4, (fd, autograd)


@UPDATE_PATHS
@pytest.mark.parametrize("opt,name", CASES, ids=[f"{o}-{n}" for o, n in CASES])
def test_hypergradient_float32_matches_float64_autograd(opt, name, foreach):
    fast, autograd, _ = run_case(opt, [name], torch.float32, foreach)
    assert rel_err(fast[0], autograd[0]) <= 1e-3, (fast, autograd)


@UPDATE_PATHS
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_all_hyperparameters_learned_together(opt, foreach):
    names = list(OPTIMIZERS[opt].learnable())
    fast, autograd, _ = run_case(opt, names, torch.float64, foreach)
    for n, f, a in zip(names, fast, autograd):
        assert rel_err(f, a) <= 1e-6, (n, f, a)


def test_weight_decay_starting_at_zero_gets_a_hypergradient_and_moves():
    params, batches = make_problem(torch.float64)
    learned = LearnedHyperParams(["weight_decay"], {"weight_decay": 0.0}, {"weight_decay": 1.0},
                                 MetaAdamConfig(lr=1e-2))
    optimizer = OPTIMIZERS["adam"](params, learned, lr=SCHED_LR)
    moved = False
    for i in range(5):
        for p, g in zip(params, grads_at(params, batches[i % 3])):
            p.grad = g
        optimizer.step()
        h = optimizer.hypergradient(grads_at(params, batches[5]))
        assert torch.isfinite(h).all() and h.abs().item() > 0
        learned.meta_step(h)
        moved |= learned.value("weight_decay").item() > 0
    # a negative hypergradient raises it off zero; a positive one keeps it at zero
    assert moved or (learned.value("weight_decay").item() == 0 and learned.exp_avg.item() > 0)


def test_train_batch_mode_differentiates_the_previous_update():
    """With keep_step_grad, the next gradient dotted with the previous update's derivative
    equals the reference hypergradient of that update at the next batch."""
    params, batches = make_problem(torch.float64)
    learned = LearnedHyperParams(["alpha", "beta1"], {"alpha": 1.0, "beta1": 0.8},
                                 {"alpha": 1.0, "beta1": 1.0}, MetaAdamConfig())
    optimizer = OPTIMIZERS["lamb"](params, learned, lr=SCHED_LR, keep_step_grad=True)
    for p, g in zip(params, grads_at(params, batches[0])):
        p.grad = g
    optimizer.step()
    expected = optimizer.hypergradient([g.clone() for g in grads_at(params, batches[1])])
    for group in optimizer.param_groups:
        group["lr"] = SCHED_LR * 0.5  # the scheduler moves on; the derivative must not
    for p, g in zip(params, grads_at(params, batches[1])):
        p.grad = g  # what the next training step leaves on .grad
    got = optimizer.hypergradient([p.grad for p in params])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


@UPDATE_PATHS
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_hypergradients_are_finite_when_the_scheduled_lr_is_zero(opt, foreach):
    """A warm-up from 0 makes the first update's lr 0: nothing may divide by it."""
    params, batches = make_problem(torch.float64)
    optimizer = build(opt, list(OPTIMIZERS[opt].learnable()), params, foreach)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for p, g in zip(params, grads_at(params, batches[0])):
        p.grad = g
    optimizer.step()
    h = optimizer.hypergradient(grads_at(params, batches[5]))
    assert torch.isfinite(h).all(), h


@UPDATE_PATHS
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_alpha_hypergradient_without_weight_decay(opt, foreach, monkeypatch):
    """A constant weight decay of 0 takes a shorter path (no pre-step parameter)."""
    monkeypatch.setitem(FIXED, opt, dict(FIXED[opt], weight_decay=0.0))
    learnable = OPTIMIZERS[opt].learnable()
    for names in (["alpha"], [n for n in ("alpha", "beta1", "eps") if n in learnable]):
        fast, autograd, fd = run_case(opt, names, torch.float64, foreach)
        for n, f, a, d in zip(names, fast, autograd, fd):
            assert rel_err(f, a) <= 1e-6, (n, f, a)
            assert rel_err(d, a) <= 1e-4, (n, d, a)


@UPDATE_PATHS
def test_adafactor_without_parameter_scaling(foreach, monkeypatch):
    """scale_parameter=False (fairseq's default with an explicit lr): lr_p = lr."""
    monkeypatch.setitem(FIXED, "adafactor", dict(FIXED["adafactor"], scale_parameter=False))
    names = list(OPTIMIZERS["adafactor"].learnable())
    fast, autograd, fd = run_case("adafactor", names, torch.float64, foreach)
    for n, f, a, d in zip(names, fast, autograd, fd):
        assert rel_err(f, a) <= 1e-6, (n, f, a)
        assert rel_err(d, a) <= 1e-4, (n, d, a)


def test_lamb_state_saved_without_the_trust_flag_gives_the_same_hypergradient():
    """A LAMB state from before `trust_from_norms` was kept (an older checkpoint)
    recovers the flag from theta and gives the same hypergradient."""
    names = list(OPTIMIZERS["lamb"].learnable())
    optimizer, params, batches = warmed_up("lamb", names, torch.float64)
    optimizer.step()
    guide = grads_at(params, batches[5])
    with_flag = optimizer.hypergradient(guide)
    for p in params:
        del optimizer.state[p]["trust_from_norms"]
    torch.testing.assert_close(optimizer.hypergradient(guide), with_flag, rtol=1e-12, atol=0)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_rows_from_a_disposable_guidance_gradient_are_the_same(opt):
    """The meta step's hooks let a row overwrite the guidance gradient (it is freed
    next); every learnable name must give the same hypergradient as from a kept one."""
    names = list(OPTIMIZERS[opt].learnable())
    optimizer, params, batches = warmed_up(opt, names, torch.float64)
    optimizer.step()
    guide = grads_at(params, batches[5])
    kept = optimizer.hypergradient(guide)
    rows = optimizer.hypergradient_rows()
    for (gi, p), g in zip(optimizer.stepped_params(), guide):
        rows.add(gi, p, g.clone(), disposable=True)
    torch.testing.assert_close(rows.total(), kept, rtol=1e-12, atol=0)
    assert kept.abs().min() > 0


@UPDATE_PATHS
@pytest.mark.parametrize("names", [["alpha"], ["weight_decay"], ["alpha", "weight_decay"]],
                         ids=["alpha", "weight_decay", "alpha+weight_decay"])
def test_adafactor_relative_step_without_momentum(foreach, monkeypatch, names):
    """T5's Adafactor: scale_parameter=True and no first moment (beta1 None), so only
    alpha and weight decay can be learned; every such name against autograd and finite
    differences."""
    monkeypatch.setitem(FIXED, "adafactor", dict(FIXED["adafactor"], beta1=None))
    fast, autograd, fd = run_case("adafactor", names, torch.float64, foreach)
    for n, f, a, d in zip(names, fast, autograd, fd):
        assert abs(a) > 1e-8, (n, a)
        assert rel_err(f, a) <= 1e-6, (n, f, a)
        assert rel_err(d, a) <= 1e-4, (n, d, a)


@pytest.mark.parametrize("beta1", [None, 0.8], ids=["no-momentum", "beta1"])
def test_adafactor_parameter_scale_is_each_tensors_own(beta1):
    """With scale_parameter, fairseq's stock Adafactor writes lr x RMS(theta) back into the
    param group, so each later tensor in the group steps with the earlier tensors' scales
    multiplied in (fairseq's scheduler resets the group's lr before the next update, so
    it compounds across tensors, not steps). Ours must equal stock Adafactor run on each
    tensor alone, where nothing can compound, and differ from stock's one-group run."""
    from fairseq.optim.adafactor import Adafactor

    fixed = dict(lr=SCHED_LR, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=beta1,
                 weight_decay=0.0, scale_parameter=True, relative_step=False, warmup_init=False)
    params, batches = make_problem(torch.float64)
    copies = {k: [p.detach().clone().requires_grad_() for p in params] for k in ("ours", "alone", "group")}
    learned = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, MetaAdamConfig(lr=0.0))
    optimizers = {"ours": [OPTIMIZERS["adafactor"](copies["ours"], learned, lr=SCHED_LR, beta1=beta1,
                                                   scale_parameter=True, eps2=1e-3)],
                  "alone": [Adafactor([p], **fixed) for p in copies["alone"]],
                  "group": [Adafactor(copies["group"], **fixed)]}
    for batch in batches[:3]:
        for key, opts in optimizers.items():
            for p, g in zip(copies[key], grads_at(copies[key], batch)):
                p.grad = g
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = SCHED_LR  # as fairseq's lr scheduler sets it every update
                opt.step()
    for ours, alone in zip(copies["ours"], copies["alone"]):
        torch.testing.assert_close(ours, alone, rtol=1e-12, atol=1e-15)
    for group, alone in zip(copies["group"][1:], copies["alone"][1:]):  # tensor 0 steps first
        assert (group - alone).abs().max() > 1e-4 * alone.abs().max()  # compounded
