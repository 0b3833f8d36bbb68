"""The shared base of the guided torch optimizers (hypergrad/base.py), in process: what
construction refuses and with which message, the base's own defaults (seen through a
minimal subclass that passes none of its options: the shipped optimizers pass all of
them), the step count, the values `hparams` hands the update, how `_batches` groups a
param group's tensors for one foreach call (tensors without a gradient skipped,
low-precision ones as fp32 copies with fp32 state, sparse gradients refused), the lr a
hypergradient uses after the scheduler moved on, the once-per-meta-step conversion of
the learned values, and a checkpoint round trip that resumes bit for bit."""
import io
import re

import pytest
import torch

from fairseq_guided.hypergrad import OPTIMIZERS
from fairseq_guided.hypergrad.base import GuidedOptimizerBase
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, LearnedStateError, MetaAdamConfig

F64 = torch.float64
INIT = {"alpha": 1.5, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": 0.05}


def learned(names=(), groups=None, **init):
    values = {**INIT, **init}
    return LearnedHyperParams(list(names), {n: values[n] for n in names}, {n: 1.0 for n in names},
                              MetaAdamConfig(lr=1e-2), groups=groups)


def tensors(shapes, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]


class PlainSGD(GuidedOptimizerBase):
    """theta -= lr g: the smallest subclass, built without the base's options, so its
    keep_step_grad and foreach are the base's defaults. Records its update calls."""

    def __init__(self, params, learned, lr=0.1):
        super().__init__(params, dict(lr=lr), learned)
        self.calls = []

    def update_one(self, p, grad, state, group, hp):
        self.calls.append(("one", 1))
        state["step"] += 1
        p.add_(grad * -hp["lr"])

    def update_many(self, params, grads, states, group, hp):
        self.calls.append(("many", len(params)))
        super().update_many(params, grads, states, group, hp)


# -- construction --------------------------------------------------------------------------


def test_the_base_defaults_are_no_kept_gradient_and_foreach():
    """A subclass passing no options gets keep_step_grad=False, foreach=True: one update_many per batch, no step_grad."""
    params = tensors([(3, 2), (4,)])
    grads = tensors([(3, 2), (4,)], seed=1)
    before = [p.clone() for p in params]
    optimizer = PlainSGD(params, learned())
    assert optimizer.keep_step_grad is False and optimizer.foreach is True
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
    # both tensors in one update_many (the base's loops update_one); foreach=False: no update_many
    assert optimizer.calls == [("many", 2), ("one", 1), ("one", 1)]
    assert all("step_grad" not in optimizer.state[p] for p in params)
    for p, b, g in zip(params, before, grads):
        assert torch.equal(p, b - 0.1 * g)


@pytest.mark.parametrize("names,bad", [(["alpha", "eps", "beta2"], ["eps", "beta2"]), (["beta2"], ["beta2"])])
def test_a_value_the_optimizer_cannot_learn_is_refused_naming_it_and_what_it_can(names, bad):
    """Learning a name the update lacks is refused with the class, the names it cannot learn and those it can."""
    expected = f"GuidedAdafactor cannot learn {bad}; it can learn ('alpha', 'beta1', 'weight_decay')"
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        OPTIMIZERS["adafactor"](tensors([(3,)]), learned(names))


def test_a_subclass_names_itself_in_the_refusal():
    """The refusal names the subclass actually built (here one that learns alpha only)."""
    with pytest.raises(ValueError, match=r"^PlainSGD cannot learn \['beta1'\]; it can learn \('alpha',\)$"):
        PlainSGD(tensors([(3,)]), learned(["alpha", "beta1"]))
    assert PlainSGD(tensors([(3,)]), learned(["alpha"])).learned.names == ["alpha"]


def test_param_groups_naming_learned_groups_are_refused_with_global_values():
    """A learned_group tag on a param group with global learned values is refused with that message."""
    groups = [dict(params=tensors([(3,)]), learned_group=0)]
    with pytest.raises(ValueError, match=r"^param groups name learned groups, but the learned values are global$"):
        OPTIMIZERS["adam"](groups, learned(["alpha"]))
    with pytest.raises(ValueError, match=r"^with 2 learned groups every param group needs learned_group in 0\.\.1; "
                                         r"got \[0, None\]$"):
        OPTIMIZERS["adam"]([*groups, dict(params=tensors([(2,)]))], learned(["alpha"], groups=["a", "b"]))


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_step_count_starts_at_zero_and_counts_steps(opt):
    """step_count is 0 when built and goes up by one per step(), with or without gradients."""
    params = tensors([(3, 2)])
    optimizer = OPTIMIZERS[opt](params, learned())
    assert optimizer.step_count == 0
    params[0].grad = torch.ones(3, 2, dtype=F64)
    optimizer.step()
    assert optimizer.step_count == 1
    params[0].grad = None  # a step with nothing to update still counts (a skipping AMP wrapper calls no step())
    optimizer.step()
    assert optimizer.step_count == 2
    assert optimizer.state[params[0]]["step"] == 1


# -- the values the update uses ---------------------------------------------------------------


def test_hparams_scales_the_given_lr_or_the_groups_by_alpha():
    """hparams: fixed values from the group, learned ones in the dtype asked, lr = (explicit lr or group lr) x alpha."""
    optimizer = OPTIMIZERS["adam"](tensors([(3,)]), learned(["alpha", "beta1"], alpha=2.0, beta1=0.5),
                                   lr=0.1, beta2=0.9, eps=1e-4, weight_decay=0.01)
    group = optimizer.param_groups[0]
    hp = optimizer.hparams(group, torch.float32)
    assert sorted(hp) == ["beta1", "beta2", "eps", "lr", "weight_decay"]
    assert (hp["beta2"], hp["eps"], hp["weight_decay"]) == (0.9, 1e-4, 0.01)
    assert hp["beta1"].dtype == torch.float32 and hp["lr"].dtype == torch.float32
    assert hp["beta1"].item() == pytest.approx(0.5, rel=1e-6)
    assert hp["lr"].item() == pytest.approx(0.2, rel=1e-6)
    explicit = optimizer.hparams(group, F64, lr=0.25)
    assert explicit["lr"].dtype == F64 and explicit["lr"].item() == pytest.approx(0.5, rel=1e-12)
    assert optimizer.hparams(group, F64, lr=None)["lr"].item() == pytest.approx(0.2, rel=1e-12)


def test_the_hypergradient_uses_the_lr_of_the_step_not_the_schedulers_next():
    """After the scheduler changes the group's lr, the hypergradient still uses the lr the differentiated step used."""
    names = ["alpha", "eps", "weight_decay", "beta1"]  # lr enters their derivatives
    hypergrads = []
    for next_lr in (None, 0.5):
        params = tensors([(4, 3), (3,)])
        optimizer = OPTIMIZERS["adam"](params, learned(names), lr=0.02, **{k: INIT[k] for k in names[1:]})
        for p, g in zip(params, tensors([(4, 3), (3,)], seed=1)):
            p.grad = g
        optimizer.step()
        if next_lr is not None:
            optimizer.param_groups[0]["lr"] = next_lr
        assert optimizer.last_step_lrs == [0.02]
        hypergrads.append(optimizer.hypergradient(tensors([(4, 3), (3,)], seed=2)))
    assert torch.equal(hypergrads[0], hypergrads[1])
    assert hypergrads[0].abs().min() > 0


def test_a_meta_step_converts_the_learned_values_once_per_dtype():
    """dot_row/combine_rows convert the learned values once per (group, dtype) and meta step, not per tensor."""
    params = tensors([(4, 3), (3,)], torch.float32) + tensors([(2, 2), (2,)])
    optimizer = OPTIMIZERS["adam"](params, learned(["alpha", "beta1"]), lr=0.02, beta1=0.8)
    for p, g in zip(params, tensors([(4, 3), (3,), (2, 2), (2,)], seed=1)):
        p.grad = g.to(p.dtype)
    optimizer.step()
    asked = []
    hparams = optimizer.hparams
    optimizer.hparams = lambda group, dtype, lr=None: (asked.append(dtype), hparams(group, dtype, lr=lr))[1]
    guide = tensors([(4, 3), (3,), (2, 2), (2,)], seed=2)
    first = optimizer.hypergradient([g.to(p.dtype) for g, p in zip(guide, params)])
    assert asked == [torch.float32, F64]  # the float64 rows and the (float64) combine share one
    assert optimizer.hypergradient([g.to(p.dtype) for g, p in zip(guide, params)]).tolist() == first.tolist()
    assert asked == [torch.float32, F64]  # the same values: nothing converted again
    optimizer.learned.meta_step(first)  # new values: converted afresh
    optimizer.hypergradient([g.to(p.dtype) for g, p in zip(guide, params)])
    assert asked == [torch.float32, F64] * 2
    assert optimizer._hparams_for_dots(0, F64)["beta1"].item() == optimizer.learned.value("beta1").item()


def test_hypergradient_refuses_a_wrong_number_of_guidance_gradients():
    """hypergradient() with fewer guidance gradients than stepped tensors says how many it expected and got."""
    params = tensors([(3,), (2,)])
    optimizer = OPTIMIZERS["adam"](params, learned(["alpha"]))
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    with pytest.raises(ValueError, match=r"^expected 2 guidance gradients, got 1$"):
        optimizer.hypergradient([torch.ones(3, dtype=F64)])


# -- grouping tensors for foreach ---------------------------------------------------------------


def test_batches_skip_tensors_without_gradient_and_group_by_dtype_as_updated():
    """_batches: a tensor without gradient is skipped (not the end of the list); bf16 ones join fp32 as fp32 copies."""
    a, b, c, d, e = (tensors([(5, 4)])[0].float(), tensors([(3,)])[0].float(), tensors([(4,)], seed=3)[0].bfloat16(),
                     tensors([(2,)], seed=4)[0], tensors([(2, 3)], seed=5)[0].float())
    for p in (a, c, d, e):
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p.dtype)
    optimizer = OPTIMIZERS["adam"]([a, b, c, d, e], learned())
    batches = optimizer._batches(optimizer.param_groups[0])
    cpu = torch.device("cpu")
    assert list(batches) == [(torch.float32, cpu, 0), (F64, cpu, 0)]
    fp32, fp64 = batches[(torch.float32, cpu, 0)], batches[(F64, cpu, 0)]
    assert [entry[0] for entry in fp32] == [a, c, e] and [entry[0] for entry in fp64] == [d]
    for p, p32, grad, state in fp32 + fp64:
        assert state is optimizer.state[p] and state["step"] == 0
        if p is c:  # half precision: an fp32 copy of the tensor and of its gradient, fp32 state
            assert p32 is not c and p32.dtype == torch.float32 and torch.equal(p32, c.float())
            assert grad.dtype == torch.float32 and torch.equal(grad, c.grad.float())
        else:
            assert p32 is p and grad is p.grad
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].dtype == p32.dtype and torch.equal(state[key], torch.zeros_like(p32))
    assert b not in optimizer.state


def test_a_group_steps_each_tensor_as_it_would_step_alone():
    """Tensors of other shapes, dtypes (bf16 via fp32) and step counts, one without gradient, step as each alone."""
    shapes = [(5, 4), (3,), (4,), (2,)]
    dtypes = [torch.float32, torch.float32, torch.bfloat16, F64]
    params = [t.to(dt) for t, dt in zip(tensors(shapes), dtypes)]
    # alone: bf16 as an fp32 tensor rounded to bf16 after each step (what the fp32 copy gives)
    alone = [p.float() if p.dtype == torch.bfloat16 else p.clone() for p in params]
    kw = dict(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-4, weight_decay=0.1)
    optimizer = OPTIMIZERS["adam"](params, learned(["alpha"]), keep_step_grad=True, **kw)
    solos = [OPTIMIZERS["adam"]([q], learned(["alpha"]), **kw) for q in alone]
    for step in range(3):
        grads = [g.to(dt) for g, dt in zip(tensors(shapes, seed=10 + step), dtypes)]
        for i, (p, q, g) in enumerate(zip(params, alone, grads)):
            stepped = i != 1 or step == 2  # the second tensor gets its first gradient at the third step
            p.grad = g if stepped else None
            q.grad = g.float() if g.dtype == torch.bfloat16 else g
            if stepped:
                solos[i].step()
                if p.dtype == torch.bfloat16:
                    q.copy_(q.bfloat16().float())
        optimizer.step()
        for p, q in zip(params, alone):
            assert torch.equal(p, q.to(p.dtype))
    assert [optimizer.state[p]["step"] for p in params] == [3, 1, 3, 3]
    assert optimizer.state[params[2]]["exp_avg"].dtype == torch.float32
    kept = optimizer.state[params[2]]["step_grad"]  # the gradient the update used: the fp32 copy
    assert kept.dtype == torch.float32 and torch.equal(kept, params[2].grad.float())


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_a_sparse_gradient_is_refused_naming_the_optimizer(opt):
    """A sparse gradient is refused with the optimizer's class name, before any tensor changes."""
    params = tensors([(3, 4), (4,)])
    before = [p.clone() for p in params]
    params[0].grad = torch.ones(3, 4, dtype=F64)
    params[1].grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, dtype=F64), (4,),
                                             check_invariants=True)
    optimizer = OPTIMIZERS[opt](params, learned())
    name = type(optimizer).__name__
    assert name == {"adam": "GuidedAdam", "lamb": "GuidedLamb", "adafactor": "GuidedAdafactor"}[opt]
    with pytest.raises(RuntimeError, match=f"^{name} does not support sparse gradients$"):
        optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert optimizer.step_count == 0


# -- checkpoints ------------------------------------------------------------------------------------


def test_a_checkpoint_round_trip_resumes_bit_for_bit():
    """state_dict/load_state_dict restore moments, step, learned values, last lrs and grouping; the next steps match."""
    names = ["alpha", "beta1"]
    shapes = [(4, 3), (3,)]

    def build(params, lr):
        return OPTIMIZERS["adam"](params, learned(names), lr=lr, beta1=0.8)

    params = tensors(shapes)
    a = build(params, 0.02)
    a.grouping_record = {"assignment": {"w": "all", "b": "all"}}
    for step in range(2):
        for p, g in zip(params, tensors(shapes, seed=1 + step)):
            p.grad = g
        a.step()
    a.learned.meta_step(a.hypergradient(tensors(shapes, seed=9)))
    a.param_groups[0]["lr"] = 0.01  # the scheduler's next lr
    buffer = io.BytesIO()  # through a file, as a checkpoint: torch's load may share tensors with a live state
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)
    assert state["guided_last_step_lrs"] == [0.02] and state["guided_grouping"] == a.grouping_record
    assert state["guided_hyper"]["names"] == names and state["guided_hyper"]["steps"].tolist() == [1.0, 1.0]

    resumed = [p.clone() for p in params]
    b = build(resumed, 0.7)
    b.load_state_dict(state)
    assert b.last_step_lrs == [0.02] and b.param_groups[0]["lr"] == 0.01
    assert torch.equal(b.learned.values(), a.learned.values()) and torch.equal(b.learned.raw, a.learned.raw)
    for p, q in zip(params, resumed):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(b.state[q][key], a.state[p][key])
        assert b.state[q]["step"] == a.state[p]["step"] == 2
    assert "guided_grouping" not in b.state_dict()  # the shell's record, not the optimizer's
    for p, q, g in zip(params, resumed, tensors(shapes, seed=5)):
        p.grad, q.grad = g, g.clone()
    a.step()
    b.step()
    assert all(torch.equal(p, q) for p, q in zip(params, resumed))


def test_a_refused_learned_state_leaves_the_optimizer_as_it_was():
    """load_state_dict checks guided_hyper before torch's load: a refused one changes no moment or lr."""
    params = tensors([(3,)])
    a = OPTIMIZERS["adam"](params, learned(["alpha"]), lr=0.02)
    params[0].grad = torch.ones(3, dtype=F64)
    a.step()
    state = a.state_dict()
    fresh = tensors([(3,)])
    b = OPTIMIZERS["adam"](fresh, learned(["alpha", "beta1"]), lr=0.7)
    with pytest.raises(LearnedStateError, match=r"^checkpoint learns hyper-parameters \['alpha'\] but "):
        b.load_state_dict(state)
    assert len(b.state) == 0 and b.param_groups[0]["lr"] == 0.7 and b.last_step_lrs == [0.7]
