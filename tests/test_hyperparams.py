"""Parameterisations and the Adam meta-optimizer."""
import math

import pytest
import torch

from fairseq_guided.flags import parse_name_list, parse_name_values
from fairseq_guided.hypergrad.hyperparams import (
    BETA_SCALE, LearnedHyperParams, MetaAdamConfig, check_initial_value,
)


def test_initial_values_are_restored_exactly_and_slopes_match_autograd():
    init = {"alpha": 0.7, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "weight_decay": 0.01}
    steep = {"alpha": 2.0, "beta1": 0.5, "beta2": 1.0, "eps": 3.0, "weight_decay": 4.0}
    hp = LearnedHyperParams(list(init), init, steep, MetaAdamConfig())
    for n, v in zip(hp.names, hp.values().tolist()):
        assert math.isclose(v, init[n], rel_tol=1e-12), n
    raw = hp.raw.clone().requires_grad_()
    s = hp.steepness
    acts = [torch.exp(s[0] * raw[0]), BETA_SCALE * torch.sigmoid(s[1] * raw[1]),
            BETA_SCALE * torch.sigmoid(s[2] * raw[2]), torch.exp(s[3] * raw[3]), s[4] * raw[4]]
    for i, a in enumerate(acts):
        (slope,) = torch.autograd.grad(a, raw)
        assert math.isclose(hp._slopes[i].item(), slope[i].item(), rel_tol=1e-12)


def test_meta_step_equals_torch_adam_on_the_raw_values():
    init = {"alpha": 1.0, "beta1": 0.9}
    steep = {"alpha": 1.0, "beta1": 2.0}
    cfg = MetaAdamConfig(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-8)
    hp = LearnedHyperParams(["alpha", "beta1"], init, steep, cfg)
    raw = hp.raw.clone().requires_grad_()
    torch_adam = torch.optim.Adam([raw], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    gen = torch.Generator().manual_seed(1)
    for _ in range(7):
        h = torch.randn(2, generator=gen, dtype=torch.float64)
        raw.grad = h * hp._slopes  # chain rule to raw space
        torch_adam.step()
        hp.meta_step(h)
        torch.testing.assert_close(hp.raw, raw.detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["guided_adam", "guided_lamb", "guided_adafactor"])
def test_meta_betas_flag_reaches_the_meta_step_in_its_order(optimizer):
    """--guided-meta-betas '(b1, b2)' as fairseq hands it to the optimizer: the meta steps
    are torch's Adam with betas (b1, b2), not (b2, b1). Betas far apart, so a swap shows."""
    from fairseq.optim import build_optimizer
    from omegaconf import OmegaConf

    import fairseq_guided  # noqa: F401 (registers the guided optimizers)

    extra = {"beta1": 0.9} if optimizer == "guided_adafactor" else {}
    params = [torch.nn.Parameter(torch.zeros(3))]
    fairseq_opt = build_optimizer(OmegaConf.create({
        "_name": optimizer, "lr": [0.01], "guided_hparams": "alpha,beta1", "guided_meta_lr": 1e-2,
        "guided_meta_betas": "(0.5, 0.99)", "guided_meta_eps": 1e-8, **extra}), params)
    hp = fairseq_opt.guided.learned
    raw = hp.raw.clone().requires_grad_()
    torch_adam = torch.optim.Adam([raw], lr=1e-2, betas=(0.5, 0.99), eps=1e-8)
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        h = torch.randn(2, generator=gen, dtype=torch.float64)
        raw.grad = h * hp._slopes
        torch_adam.step()
        hp.meta_step(h)
        torch.testing.assert_close(hp.raw, raw.detach(), rtol=1e-12, atol=1e-15)
    # the second moment's share of one hypergradient: (1 - b2), not (1 - b1)
    torch.testing.assert_close(hp.exp_avg_sq, torch_adam.state[raw]["exp_avg_sq"], rtol=1e-12, atol=0)


def test_nonfinite_hypergradient_never_reaches_the_values_and_is_counted():
    hp = LearnedHyperParams(["alpha", "beta1"], {"alpha": 1.0, "beta1": 0.9},
                            {"alpha": 1.0, "beta1": 1.0}, MetaAdamConfig(lr=1e-2))
    hp.meta_step(torch.tensor([0.5, -0.5], dtype=torch.float64))
    before = (hp.raw.clone(), hp.exp_avg.clone(), hp.exp_avg_sq.clone(), hp.steps.clone())
    hp.meta_step(torch.tensor([float("nan"), float("inf")], dtype=torch.float64))
    for a, b in zip(before, (hp.raw, hp.exp_avg, hp.exp_avg_sq, hp.steps)):
        assert torch.equal(a, b)
    assert hp.nonfinite_count.tolist() == [1.0, 1.0]
    hp.meta_step(torch.tensor([float("nan"), 1.0], dtype=torch.float64))
    assert hp.raw[0] == before[0][0] and hp.raw[1] != before[0][1]
    assert hp.nonfinite_count.tolist() == [2.0, 1.0]


def test_clipping_bounds_the_raw_hypergradient():
    cfg = MetaAdamConfig(lr=1.0, grad_clip=0.1)
    hp = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, cfg)
    hp.meta_step(torch.tensor([1e6], dtype=torch.float64))
    assert math.isclose(hp.exp_avg.item(), 0.1 * (1 - cfg.beta1), rel_tol=1e-12)


def test_name_parsing_refuses_unknown_names_and_substrings():
    allowed = ("alpha", "beta1")
    assert parse_name_list("alpha, beta1", allowed, "--guided-hparams") == ["alpha", "beta1"]
    for bad in ("beta", "alph", "beta1,gamma", "alpha,alpha"):
        with pytest.raises(ValueError, match="--guided-hparams"):
            parse_name_list(bad, allowed, "--guided-hparams")
    assert parse_name_values("alpha=2", allowed, "--x") == {"alpha": 2.0}
    with pytest.raises(ValueError, match="--x"):
        parse_name_values("alpha:2", allowed, "--x")


@pytest.mark.parametrize("name,value", [("beta1", 1.0), ("beta1", 0.0), ("alpha", -1.0),
                                        ("eps", 0.0), ("weight_decay", -0.1)])
def test_initial_values_outside_their_range_are_refused(name, value):
    with pytest.raises(ValueError, match="--flag"):
        check_initial_value(name, value, "--flag")


def test_state_dict_round_trip_and_name_mismatch():
    cfg = MetaAdamConfig(lr=1e-2)
    a = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, cfg)
    a.meta_step(torch.tensor([0.3], dtype=torch.float64))
    b = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, cfg)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.values(), b.values()) and torch.equal(a.exp_avg, b.exp_avg)
    c = LearnedHyperParams(["beta1"], {"beta1": 0.9}, {"beta1": 1.0}, cfg)
    with pytest.raises(ValueError, match="--guided-hparams"):
        c.load_state_dict(a.state_dict())


def test_changed_steepness_on_resume_keeps_values_and_scales_the_meta_step():
    """Issue 15, case 3: the raw values are re-derived so the values are what resumes; the
    first meta step afterwards is steepness_new / steepness_old times as large in value."""
    names = ["alpha", "beta1", "weight_decay"]
    init = {"alpha": 1.3, "beta1": 0.9, "weight_decay": 0.01}
    meta = MetaAdamConfig(lr=1e-4)
    before = LearnedHyperParams(names, init, {n: 1.0 for n in names}, meta)
    for h in ([0.3, -0.2, 0.1], [0.1, 0.4, -0.2]):
        before.meta_step(torch.tensor(h, dtype=torch.float64))
    state = before.state_dict()
    after = LearnedHyperParams(names, init, {"alpha": 4.0, "beta1": 0.25, "weight_decay": 2.0}, meta)
    after.load_state_dict(state)
    assert torch.allclose(after.values(), before.values(), rtol=1e-13, atol=0)
    start = before.values().clone()
    h = torch.tensor([0.2, -0.3, 0.5], dtype=torch.float64)
    before.meta_step(h)
    after.meta_step(h)
    ratio = (after.values() - start) / (before.values() - start)
    assert torch.allclose(ratio, torch.tensor([4.0, 0.25, 2.0], dtype=torch.float64), rtol=1e-3)


def test_each_group_meta_steps_as_its_own_global_value():
    """(G, K) values: every group's row moves exactly as a global LearnedHyperParams fed
    that row's hypergradients, a non-finite entry skipping only its own value."""
    names, init = ["alpha", "beta1"], {"alpha": 1.0, "beta1": 0.9}
    steep, cfg = {"alpha": 2.0, "beta1": 0.5}, MetaAdamConfig(lr=1e-2, grad_clip=0.5)
    grouped = LearnedHyperParams(names, init, steep, cfg, groups=["a", "b", "c"])
    singles = [LearnedHyperParams(names, init, steep, cfg) for _ in range(3)]
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        h = torch.randn(3, 2, generator=gen, dtype=torch.float64)
        if step == 2:
            h[1, 0] = float("nan")
        grouped.meta_step(h)
        for g, single in enumerate(singles):
            single.meta_step(h[g])
    for g, single in enumerate(singles):
        for key in ("raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count"):
            assert torch.equal(getattr(grouped, key)[g], getattr(single, key)), (g, key)
        assert torch.equal(grouped.values()[g], single.values())
    assert grouped.nonfinite_count.tolist() == [[0, 0], [1, 0], [0, 0]]
    assert len({tuple(r) for r in grouped.raw.tolist()}) == 3  # the groups went apart


def test_group_values_resume_and_a_different_grouping_is_refused():
    cfg = MetaAdamConfig(lr=1e-2)
    a = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, cfg, groups=["enc", "dec"])
    a.meta_step(torch.tensor([[1.0], [-2.0]], dtype=torch.float64))
    b = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, cfg, groups=["enc", "dec"])
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.raw, b.raw) and torch.equal(a.exp_avg_sq, b.exp_avg_sq)
    assert a.value("alpha", 0) < 1.0 < a.value("alpha", 1)  # descent on +1 and -2
    for groups, said in ((["enc", "dec", "other"], "one value per group"), (None, "one global value")):
        c = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, cfg, groups=groups)
        with pytest.raises(ValueError, match=f"--guided-groups asks for {said}"):
            c.load_state_dict(a.state_dict())
    g = LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, cfg)
    assert "groups" not in g.state_dict()  # a global checkpoint keeps its old layout
    with pytest.raises(ValueError, match="one global value each"):
        a.load_state_dict(g.state_dict())
    with pytest.raises(ValueError, match="give a group index"):
        a.value("alpha")
