"""The guided torch optimizers as a direct torch user builds them, with only the required
arguments (the fairseq shells pass every argument, so only such a call reaches a default,
and reading the signature cannot tell what the body passes on): each default steps as its
documented value passed explicitly and as the stock optimizer (torch's Adam, fairseq's
Adafactor) or, for LAMB, the paper's algorithm (the reference twin); keep_step_grad and
foreach by what they do."""
import pytest
import torch

from fairseq_guided.hypergrad import OPTIMIZERS
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
from fairseq_guided.hypergrad.reference import lamb_reference

F64 = torch.float64
# every default at its documented value: torch's / fairseq's Adam, LAMB's paper (You et
# al.), fairseq's Adafactor with an explicit lr (as fairseq-train runs it: no relative
# step, --scale-parameter off unless given); the update's own options last
DOCUMENTED = {
    "adam": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0),
    "lamb": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0),
    "adafactor": dict(lr=1e-3, beta1=None, weight_decay=0.0, eps1=1e-30, eps2=1e-3, clip_threshold=1.0,
                      decay_rate=-0.8, scale_parameter=False),
}
OPTIONS = dict(keep_step_grad=False, foreach=True)
SHAPES = [(5, 4), (4,)]
# RMS(theta) ~ 1e-4, below eps2 = 1e-3: with scale_parameter Adafactor's scale is eps2
SCALE = 1e-4
# (optimizer, arguments given besides the required ones)
CASES = [("adam", {}), ("lamb", {}), ("adafactor", {}), ("adafactor", {"scale_parameter": True})]
IDS = ["adam", "lamb", "adafactor", "adafactor-scale_parameter"]


def nothing_learned():
    return LearnedHyperParams([], {}, {}, MetaAdamConfig())


def alpha_learned():
    return LearnedHyperParams(["alpha"], {"alpha": 1.0}, {"alpha": 1.0}, MetaAdamConfig())


def trajectory(make, steps=4, reset_lr=None):
    """The parameters after `steps` steps on fixed gradients of the optimizers make(params)
    returns; reset_lr: set every group's lr before each step (as fairseq's scheduler does)."""
    gen = torch.Generator().manual_seed(0)
    params = [SCALE * torch.randn(s, generator=gen, dtype=F64) for s in SHAPES]
    optimizers = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=F64)
        for optimizer in optimizers:
            if reset_lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = reset_lr
            optimizer.step()
    return params


class PaperLamb:
    """LAMB's Algorithm 2 at the paper's defaults, from the reference twin."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
        self.params, self.hp, self.param_groups = params, (lr, beta1, beta2, eps, weight_decay), []
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.t = 0

    def step(self):
        self.t += 1
        for i, p in enumerate(self.params):
            new, m, v, _ = lamb_reference(p, p.grad, *self.moments[i], self.t, *self.hp)
            p.copy_(new)
            self.moments[i] = (m, v)


@pytest.mark.parametrize("opt,given", CASES, ids=IDS)
def test_the_defaults_step_as_the_documented_values_passed_explicitly(opt, given):
    """Built with only its required arguments, each steps bit for bit as with every default passed explicitly."""
    cls = OPTIMIZERS[opt]
    by_default = trajectory(lambda ps: [cls(ps, nothing_learned(), **given)])
    explicit = trajectory(lambda ps: [cls(ps, nothing_learned(), **{**DOCUMENTED[opt], **OPTIONS, **given})])
    for a, b in zip(by_default, explicit):
        assert torch.equal(a, b)
    start = trajectory(lambda ps: [], steps=0)
    assert all(not torch.equal(a, s) for a, s in zip(by_default, start))


def stock(opt, given):
    """The stock optimizer (or the paper's algorithm) at its own defaults, with the lr
    and options fairseq-train gives it; and the lr its scheduler resets each update."""
    if opt == "adam":
        return (lambda ps: [torch.optim.Adam(ps)]), None
    if opt == "lamb":
        return (lambda ps: [PaperLamb(ps)]), None
    from fairseq.optim.adafactor import Adafactor

    kw = dict(lr=1e-3, relative_step=False, scale_parameter=given.get("scale_parameter", False))
    # with scale_parameter stock writes lr x scale into the group, compounding over the
    # tensors of a group: one optimizer per tensor, the lr reset each step
    return (lambda ps: [Adafactor([p], **kw) for p in ps]), 1e-3


@pytest.mark.parametrize("opt,given", CASES, ids=IDS)
def test_the_defaults_step_as_the_stock_optimizer_with_its_defaults(opt, given):
    """Built with only its required arguments, each steps as torch's Adam, fairseq's Adafactor or LAMB's paper."""
    make_stock, reset_lr = stock(opt, given)
    ours = trajectory(lambda ps: [OPTIMIZERS[opt](ps, nothing_learned(), **given)])
    theirs = trajectory(make_stock, reset_lr=reset_lr)
    for a, b in zip(ours, theirs):
        if opt == "adam":  # fairseq's eps is outside the bias correction, torch's inside: ~1e-4 of a step
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        else:  # the same formula
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    start = trajectory(lambda ps: [], steps=0)
    moved = [(a - s).abs().max() / s.abs().max() for a, s in zip(ours, start)]
    assert min(moved) > 1e-3  # every tensor stepped visibly


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_keep_step_grad_is_off_by_default_and_keeps_the_gradient_when_asked(opt):
    """keep_step_grad is off by default; when on, a step's hypergradient uses its own gradient after .grad moves on."""
    # train-batch guidance differentiates a step after the next gradient has arrived
    gen = torch.Generator().manual_seed(1)
    params = {"default": [torch.randn(s, generator=gen, dtype=F64) for s in SHAPES]}
    params["kept"] = [p.clone() for p in params["default"]]
    optimizers = {"default": OPTIMIZERS[opt](params["default"], alpha_learned()),
                  "kept": OPTIMIZERS[opt](params["kept"], alpha_learned(), keep_step_grad=True)}
    grads = [torch.randn(s, generator=gen, dtype=F64) for s in SHAPES]
    for key, optimizer in optimizers.items():
        for p, g in zip(params[key], grads):
            p.grad = g.clone()
        optimizer.step()
    assert all("step_grad" not in optimizers["default"].state[p] for p in params["default"])
    for p, g in zip(params["kept"], grads):
        assert torch.equal(optimizers["kept"].state[p]["step_grad"], g)
    guide = [torch.randn(s, generator=gen, dtype=F64) for s in SHAPES]
    expected = optimizers["default"].hypergradient([g.clone() for g in guide])  # .grad: the step's
    for p in params["kept"]:
        p.grad.copy_(torch.randn(p.shape, generator=gen, dtype=F64))  # the next gradient, in place
    torch.testing.assert_close(optimizers["kept"].hypergradient([g.clone() for g in guide]), expected,
                               rtol=1e-12, atol=0)
    assert expected.abs().min() > 0


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_foreach_is_on_by_default_and_off_when_asked(opt):
    """foreach is on by default (a group's tensors step together, update_many); foreach=False steps them one by one."""
    results = {}
    for key, extra in (("default", {}), ("per-tensor", {"foreach": False})):
        calls = []

        def make(ps, extra=extra, calls=calls):
            optimizer = OPTIMIZERS[opt](ps, nothing_learned(), **extra)
            many, one = optimizer.update_many, optimizer.update_one
            optimizer.update_many = lambda params, *a: (calls.append(("many", len(params))), many(params, *a))
            optimizer.update_one = lambda *a: (calls.append(("one", 1)), one(*a))
            return [optimizer]

        results[key] = trajectory(make, steps=2)
        if key == "default":  # one call per step for both tensors (Adafactor's loops update_one)
            assert [c for c in calls if c[0] == "many"] == [("many", len(SHAPES))] * 2
        else:
            assert calls == [("one", 1)] * (2 * len(SHAPES))
    for a, b in zip(results["default"], results["per-tensor"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
