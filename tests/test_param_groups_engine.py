"""Per-group learned values in the engine: each group's hypergradient against float64
autograd through the reference step and against finite differences; the groups' sum
against the global hypergradient; and the global values bit for bit as before groups."""
import pytest
import torch

from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
from fairseq_guided.hypergrad import OPTIMIZERS
from test_hypergrad_engine import (
    CASES, FIXED, SCHED_LR, UPDATE_PATHS, grads_at, loss_fn, make_problem, reference_guidance_loss,
    rel_err, warmed_up,
)

GROUPS = ["first", "biases", "second"]
# tensors of make_problem: w1 (5, 4), b1 (5,), w2 (3, 5), b2 (3,); three groups of
# different shapes. The torch param groups come in another order than the learned
# groups, so a mix-up of the two indices shows.
MEMBERS = {"second": [2], "first": [0], "biases": [1, 3]}
GROUP_VALUES = {
    "alpha": [1.3, 0.7, 1.1], "beta1": [0.8, 0.6, 0.9], "beta2": [0.95, 0.9, 0.99],
    "eps": [1e-3, 3e-3, 5e-4], "weight_decay": [0.05, 0.02, 0.1],
}


def initial(opt, names):
    fixed = FIXED[opt]
    return {"alpha": 1.3, **{k: v for k, v in fixed.items() if k in names}}


def build_grouped(opt, names, params, foreach=True, distinct=True):
    learned = LearnedHyperParams(names, initial(opt, names), {n: 1.0 for n in names},
                                 MetaAdamConfig(lr=1e-2), groups=GROUPS)
    if distinct:
        for name in names:
            for g, value in enumerate(GROUP_VALUES[name]):
                learned.set_value(name, value, g)
    param_groups = [{"params": [params[i] for i in idx], "learned_group": GROUPS.index(name)}
                    for name, idx in MEMBERS.items()]
    return OPTIMIZERS[opt](param_groups, learned, lr=SCHED_LR, foreach=foreach, **FIXED[opt])


def group_of_tensor():
    return {i: GROUPS.index(name) for name, idx in MEMBERS.items() for i in idx}


def guide_grads_in_step_order(optimizer, params, grads):
    by_id = {id(p): g for p, g in zip(params, grads)}
    return [by_id[id(p)] for _, p in optimizer.stepped_params()]


def run_grouped_case(opt, names, foreach):
    """(G, K) engine hypergradient, and the same from autograd and finite differences."""
    optimizer, params, batches = warmed_up(opt, names, torch.float64, foreach, builder=build_grouped)
    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    states = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()}
              for p in params]
    values = optimizer.learned.values().tolist()  # (G, K)
    optimizer.step()
    guide = batches[5]
    fast = optimizer.hypergradient(guide_grads_in_step_order(optimizer, params, grads_at(params, guide)))

    base = {"alpha": 1.0, **FIXED[opt]}
    per_group = [dict(base, **dict(zip(names, row))) for row in values]
    owner = group_of_tensor()

    def guide_loss_of(group_hps):
        new = [reference_guidance_loss(opt, [before[i]], [grads[i]], [states[i]], group_hps[owner[i]])[0]
               for i in range(len(params))]
        return loss_fn(new, guide), new

    leaves = [{n: torch.tensor(hp[n], dtype=torch.float64, requires_grad=True) for n in names}
              for hp in per_group]
    loss, new_params = guide_loss_of([dict(hp, **leaf) for hp, leaf in zip(per_group, leaves)])
    for fast_p, ref_p in zip(params, new_params):  # each tensor stepped with its group's values
        torch.testing.assert_close(fast_p.detach(), ref_p.detach(), rtol=1e-12, atol=1e-14)
    flat_leaves = [leaf[n] for leaf in leaves for n in names]
    autograd = torch.stack(torch.autograd.grad(loss, flat_leaves)).reshape(len(GROUPS), len(names))

    finite_diff, fd_noise = torch.zeros_like(autograd), torch.zeros_like(autograd)
    for g in range(len(GROUPS)):
        for k, n in enumerate(names):
            # a wider step than the global test's: a small group's derivative is small, and
            # the losses' rounding must stay well below it
            h = 1e-4 * max(abs(per_group[g][n]), 1e-2)
            moved = [dict(hp) for hp in per_group]
            moved[g][n] = per_group[g][n] + h
            up = guide_loss_of(moved)[0].item()
            moved[g][n] = per_group[g][n] - h
            down = guide_loss_of(moved)[0].item()
            finite_diff[g, k] = (up - down) / (2 * h)
            # rounding of the two losses, divided by 2h: a small group's derivative can
            # be close to it
            fd_noise[g, k] = 8 * torch.finfo(torch.float64).eps * abs(up) / (2 * h)
    return fast, autograd, finite_diff, fd_noise


@pytest.mark.parametrize("opt,name", CASES, ids=[f"{o}-{n}" for o, n in CASES])
def test_per_group_hypergradient_matches_autograd_and_finite_differences(opt, name):
    fast, autograd, fd, fd_noise = run_grouped_case(opt, [name], foreach=True)
    assert fast.shape == (3, 1)
    for g in range(3):
        a, f, d = autograd[g, 0].item(), fast[g, 0].item(), fd[g, 0].item()
        assert abs(a) > 1e-8 and abs(a) > 10 * fd_noise[g, 0], (GROUPS[g], "degenerate case", a)
        assert rel_err(f, a) <= 1e-6, (GROUPS[g], f, a)
        assert abs(d - a) <= 1e-4 * abs(a) + fd_noise[g, 0].item(), (GROUPS[g], d, a)


@UPDATE_PATHS
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_all_names_per_group_together(opt, foreach):
    names = list(OPTIMIZERS[opt].learnable())
    fast, autograd, _, _ = run_grouped_case(opt, names, foreach)
    torch.testing.assert_close(fast, autograd, rtol=1e-6, atol=1e-12)


@UPDATE_PATHS
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_sum_over_groups_is_the_global_hypergradient(opt, foreach):
    """Moving every group's value together is moving the global value: with equal values
    the per-group hypergradients sum to the global one, and the two runs' updates agree."""
    names = list(OPTIMIZERS[opt].learnable())
    grouped_params, batches = make_problem(torch.float64)
    global_params, _ = make_problem(torch.float64)
    grouped = build_grouped(opt, names, grouped_params, foreach, distinct=False)
    learned = LearnedHyperParams(names, initial(opt, names), {n: 1.0 for n in names}, MetaAdamConfig())
    global_ = OPTIMIZERS[opt](global_params, learned, lr=SCHED_LR, foreach=foreach, **FIXED[opt])
    for batch in batches[:4]:
        for params, optimizer in ((grouped_params, grouped), (global_params, global_)):
            for p, g in zip(params, grads_at(params, batch)):
                p.grad = g
            optimizer.step()
    for a, b in zip(grouped_params, global_params):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    per_group = grouped.hypergradient(
        guide_grads_in_step_order(grouped, grouped_params, grads_at(grouped_params, batches[5])))
    whole = global_.hypergradient(grads_at(global_params, batches[5]))
    assert per_group.shape == (3, len(names)) and whole.shape == (len(names),)
    torch.testing.assert_close(per_group.sum(0), whole, rtol=1e-10, atol=1e-14)
    assert (per_group.abs() > 1e-10).all()  # every group contributes to every name


# Raw values after 4 steps + meta steps, then the sum of each tensor, as float.hex, of the
# global trajectory below, recorded with commit 29dca26 (before per-group values).
GLOBAL_TRAJECTORY_29DCA26 = {
    ("adam", torch.float32): ['0x1.3486157de7d5cp-2', '0x1.67c6d86948f49p+0', '0x1.744e1c6231d59p+1', '-0x1.bc537d92e1c0dp+2', '0x1.6d1d49c87fe40p-4', '-0x1.e9657e5000000p-1', '-0x1.378c9b6000000p+0', '0x1.1e49cf0000000p+0', '-0x1.4031270000000p-2'],  # noqa: E501
    ("adam", torch.float64): ['0x1.34873c818ffe3p-2', '0x1.694b1d04ab34fp+0', '0x1.744e3beeaf44fp+1', '-0x1.bc53ad4bc2b9bp+2', '0x1.6d1b07789dfe0p-4', '-0x1.e9576701e85fcp-1', '-0x1.3790b07c414f6p+0', '0x1.1e31dc826acefp+0', '-0x1.403179bd1b704p-2'],  # noqa: E501
    ("lamb", torch.float32): ['0x1.354e254e6ea56p-2', '0x1.694176c9054dfp+0', '0x1.7602b0a417378p+1', '-0x1.b7f9c8063e671p+2', '0x1.55d89c69a3526p-4', '-0x1.d6159b8000000p-1', '-0x1.2573146000000p+0', '0x1.2769faa000000p+0', '-0x1.6f67fe0000000p-2'],  # noqa: E501
    ("lamb", torch.float64): ['0x1.354e2540d5ae3p-2', '0x1.694176b1a0e29p+0', '0x1.7603341f6361dp+1', '-0x1.b7f9c807940dfp+2', '0x1.55d8a35e46460p-4', '-0x1.d615ad6286c52p-1', '-0x1.25731619787a3p+0', '0x1.2769ff513c301p+0', '-0x1.6f67f423b5a52p-2'],  # noqa: E501
    ("adafactor", torch.float32): ['0x1.34c43ec485f39p-2', '0x1.59a382937ac11p+0', '0x1.70470d5d8718dp-4', '-0x1.b6cecec000000p-1', '-0x1.1f1903a800000p+0', '0x1.28db22a800000p+0', '-0x1.8ee3200000000p-2'],  # noqa: E501
    ("adafactor", torch.float64): ['0x1.34c43ec5ba260p-2', '0x1.59a382930b640p+0', '0x1.70470d580cde9p-4', '-0x1.b6ced2ddcfb68p-1', '-0x1.1f190274ea0b0p+0', '0x1.28db21562b224p+0', '-0x1.8ee316b0d37f4p-2'],  # noqa: E501
}


def trajectory(opt, dtype, one_group=False):
    """Every learnable name of `opt`, 4 steps each followed by a meta step."""
    names = list(OPTIMIZERS[opt].learnable())
    params, batches = make_problem(dtype)
    groups = ["all"] if one_group else None
    learned = LearnedHyperParams(names, initial(opt, names), {n: 1.0 for n in names},
                                 MetaAdamConfig(lr=1e-2), groups=groups)
    param_groups = [{"params": params, "learned_group": 0}] if one_group else params
    optimizer = OPTIMIZERS[opt](param_groups, learned, lr=SCHED_LR, **FIXED[opt])
    for i in range(4):
        for p, g in zip(params, grads_at(params, batches[i])):
            p.grad = g
        optimizer.step()
        learned.meta_step(optimizer.hypergradient(grads_at(params, batches[5])))
    return ([float(x).hex() for x in learned.raw.reshape(-1).tolist()]
            + [float(p.detach().double().sum()).hex() for p in params])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_global_values_are_bit_for_bit_as_before_groups(opt, dtype):
    assert trajectory(opt, dtype) == GLOBAL_TRAJECTORY_29DCA26[(opt, dtype)]


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_one_group_of_everything_is_bit_for_bit_the_global_run(opt):
    assert trajectory(opt, torch.float32, one_group=True) == GLOBAL_TRAJECTORY_29DCA26[(opt, torch.float32)]


def test_param_groups_must_name_valid_learned_groups():
    params, _ = make_problem(torch.float64)
    learned = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, MetaAdamConfig(), groups=["a", "b"])
    with pytest.raises(ValueError, match="learned_group in 0..1"):
        OPTIMIZERS["adam"]([{"params": params[:2], "learned_group": 0}, {"params": params[2:]}], learned)
    with pytest.raises(ValueError, match="learned_group in 0..1"):
        OPTIMIZERS["adam"]([{"params": params, "learned_group": 2}], learned)
    global_ = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, MetaAdamConfig())
    with pytest.raises(ValueError, match="values are global"):
        OPTIMIZERS["adam"]([{"params": params, "learned_group": 0}], global_)
