"""The learned values' checkpoint entry, in process: what `state_dict` writes, what
`load_state_dict` takes back, and each refusal of `check_state` with the entry it names
(tests/test_faults_learned_state.py runs the same refusals through fairseq-train)."""
import re

import pytest
import torch

from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, LearnedStateError, MetaAdamConfig

NAMES = ["alpha", "beta1"]
INIT = {"alpha": 1.0, "beta1": 0.9}
STEEP = {"alpha": 1.0, "beta1": 1.0}
KEYS = ["names", "raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count", "skipped_count", "steepness"]


def learned(groups=None, names=NAMES, steep=STEEP):
    return LearnedHyperParams(names, {n: INIT[n] for n in names}, {n: steep[n] for n in names},
                              MetaAdamConfig(lr=1e-2), groups=groups)


def stepped(groups=None):
    """A state with every entry distinct from its initial value."""
    hp = learned(groups)
    shape = hp.shape
    for h in (0.3, float("nan"), -0.5):
        hp.meta_step(torch.full(shape, h, dtype=torch.float64))
    return hp


def test_state_dict_holds_every_entry_on_the_cpu_in_float64():
    hp = stepped()
    state = hp.state_dict()
    assert list(state) == KEYS  # a global state has no "groups" key (older checkpoints' layout)
    assert state["names"] == NAMES
    for key in KEYS[1:]:
        assert state[key].dtype == torch.float64 and state[key].device.type == "cpu", key
    assert state["steps"].tolist() == [2.0, 2.0] and state["nonfinite_count"].tolist() == [1.0, 1.0]
    assert torch.equal(state["raw"], hp.raw) and torch.equal(state["steepness"], hp.steepness)
    grouped = stepped(groups=["enc", "dec"]).state_dict()
    assert list(grouped) == ["groups"] + KEYS and grouped["groups"] == ["enc", "dec"]


def test_load_restores_every_entry_and_the_values():
    a = stepped(groups=["enc", "dec"])
    a.skipped_count = a.skipped_count + torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    b = learned(groups=["enc", "dec"])
    b.load_state_dict(a.state_dict())
    for key in ("raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count", "skipped_count"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
        assert getattr(b, key).dtype == torch.float64, key
    assert torch.equal(a.values(), b.values()) and torch.equal(a._slopes, b._slopes)


def test_load_of_an_older_state_without_skipped_count_or_steepness_starts_the_count_at_zero():
    a = stepped()
    b = learned()
    b.skipped_count = torch.ones(b.shape, dtype=torch.float64)  # must not survive the load
    state = {k: v for k, v in a.state_dict().items() if k not in ("skipped_count", "steepness")}
    b.load_state_dict(state)
    assert torch.equal(b.skipped_count, torch.zeros(b.shape, dtype=torch.float64))
    assert torch.equal(b.raw, a.raw) and torch.equal(b.values(), a.values())


def test_load_converts_a_float32_state_to_float64():
    a = stepped()
    state = {k: (v.float() if torch.is_tensor(v) else v) for k, v in a.state_dict().items()}
    b = learned()
    b.load_state_dict(state)
    assert b.raw.dtype == torch.float64 and b.exp_avg_sq.dtype == torch.float64
    torch.testing.assert_close(b.raw, a.raw.float().double(), rtol=0, atol=0)


def test_set_value_sets_one_value_and_keeps_the_meta_state():
    hp = stepped(groups=["enc", "dec"])
    moments = hp.exp_avg.clone()
    hp.set_value("beta1", 0.5, group=1)
    assert hp.value("beta1", 1).item() == pytest.approx(0.5, rel=1e-12)
    assert hp.value("beta1", 0).item() != pytest.approx(0.5, abs=1e-3)
    assert torch.equal(hp.exp_avg, moments)
    hp.set_value("alpha", 0.25)  # no group given: every group's value
    assert hp.value("alpha", 0).item() == pytest.approx(0.25, rel=1e-12)
    assert hp.value("alpha", 1).item() == pytest.approx(0.25, rel=1e-12)
    assert hp.value("beta1", 1).item() == pytest.approx(0.5, rel=1e-12)
    flat = learned()
    flat.set_value("alpha", 2.5)
    assert flat.value("alpha").item() == pytest.approx(2.5, rel=1e-12)
    assert flat.value("beta1").item() == pytest.approx(0.9, rel=1e-12)
    with pytest.raises(ValueError, match=r"^set_value: initial beta1 = 1.5 is not allowed"):
        flat.set_value("beta1", 1.5)


def _entry(name, why):
    return "^" + re.escape(f"guided_hyper[{name!r}] {why}; resume from a checkpoint whose learned state is whole")


def _with(state, **changes):
    out = dict(state)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


GOOD = stepped().state_dict()
NAN = torch.tensor([float("nan"), 0.0], dtype=torch.float64)
CASES = {
    "names missing": (_with(GOOD, names=None), _entry("names", "is missing")),
    "raw missing": (_with(GOOD, raw=None), _entry("raw", "is missing")),
    "steps missing": (_with(GOOD, steps=None), _entry("steps", "is missing")),
    "raw a list": (_with(GOOD, raw=[0.0, 0.0]), _entry("raw", "is a list, not a tensor")),
    "raw 0-d": (_with(GOOD, raw=torch.tensor(0.0, dtype=torch.float64)),
                _entry("raw", "has shape (), but this run learns alpha, beta1 (shape (2,))")),
    "exp_avg (1,)": (_with(GOOD, exp_avg=torch.zeros(1, dtype=torch.float64)),
                     _entry("exp_avg", "has shape (1,), but this run learns alpha, beta1 (shape (2,))")),
    "skipped_count (3,)": (_with(GOOD, skipped_count=torch.zeros(3, dtype=torch.float64)),
                           _entry("skipped_count", "has shape (3,), but this run learns alpha, beta1 (shape (2,))")),
    "steepness (3,)": (_with(GOOD, steepness=torch.ones(3, dtype=torch.float64)),
                       _entry("steepness", "has shape (3,), but this run learns alpha, beta1 (shape (2,))")),
    "raw nan": (_with(GOOD, raw=NAN), _entry("raw", "is not finite ([nan, 0.0])")),
    "exp_avg nan": (_with(GOOD, exp_avg=NAN), _entry("exp_avg", "is not finite ([nan, 0.0])")),
    "exp_avg_sq negative": (_with(GOOD, exp_avg_sq=torch.tensor([-1.0, 0.0], dtype=torch.float64)),
                            _entry("exp_avg_sq", "has a negative entry ([-1.0, 0.0])")),
    "nonfinite_count negative": (_with(GOOD, nonfinite_count=torch.tensor([0.0, -2.0], dtype=torch.float64)),
                                 _entry("nonfinite_count", "has a negative entry ([0.0, -2.0])")),
    "steepness 0": (_with(GOOD, steepness=torch.tensor([1.0, 0.0], dtype=torch.float64)),
                    _entry("steepness", "is not > 0 ([1.0, 0.0])")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_malformed_entry_is_refused_naming_it(case):
    state, message = CASES[case]
    hp = learned()
    before = {k: getattr(hp, k).clone() for k in ("raw", "exp_avg", "exp_avg_sq", "steps")}
    with pytest.raises(LearnedStateError, match=message):
        hp.load_state_dict(state)
    for key, value in before.items():  # a refused load changes nothing
        assert torch.equal(getattr(hp, key), value), key


def test_the_named_value_is_the_one_outside_its_range():
    hp = learned()
    raw = torch.tensor([1e6, 0.0], dtype=torch.float64)  # alpha = exp(1e6) = inf; beta1 fine
    with pytest.raises(LearnedStateError, match=_entry("raw", "gives alpha = inf, outside its range")):
        hp.load_state_dict(_with(GOOD, raw=raw))
    raw = torch.tensor([0.0, 1e6], dtype=torch.float64)  # beta1 at BETA_SCALE's edge, alpha fine
    with pytest.raises(LearnedStateError, match=_entry("raw", "gives beta1 = 0.99999, outside its range")):
        hp.load_state_dict(_with(GOOD, raw=raw))
    grouped = learned(groups=["a", "b"])
    state = stepped(groups=["a", "b"]).state_dict()
    state["raw"] = torch.tensor([[0.0, 0.0], [1e6, 0.0]], dtype=torch.float64)  # group b's alpha
    with pytest.raises(LearnedStateError, match=re.escape("gives alpha = [1.0, inf], outside its range")):
        grouped.load_state_dict(state)


def test_the_range_check_uses_the_checkpoints_steepness():
    """raw 400 with steepness 2 is exp(800) = inf; with this run's steepness 1 it would be finite."""
    hp = learned()
    state = _with(GOOD, raw=torch.tensor([400.0, 0.0], dtype=torch.float64),
                  steepness=torch.tensor([2.0, 1.0], dtype=torch.float64))
    with pytest.raises(LearnedStateError, match=_entry("raw", "gives alpha = inf, outside its range")):
        hp.load_state_dict(state)
    fine = _with(GOOD, raw=torch.tensor([400.0, 0.0], dtype=torch.float64), steepness=None)
    hp.load_state_dict(fine)  # no steepness saved: this run's (1) applies, exp(400) is finite
    assert torch.isfinite(hp.values()).all()


def test_not_a_dict_and_other_names_or_groups_are_refused():
    hp = learned()
    with pytest.raises(LearnedStateError, match=r"^guided_hyper is a list, not a dict; pass --reset-optimizer"):
        hp.load_state_dict([])
    with pytest.raises(LearnedStateError, match=re.escape(
            "checkpoint learns hyper-parameters ['alpha'] but --guided-hparams asks for ['alpha', 'beta1']")):
        hp.load_state_dict(learned(names=["alpha"]).state_dict())
    with pytest.raises(LearnedStateError, match=re.escape(
            "checkpoint learns one value per group ['x', 'y'] but --guided-groups asks for one global value each")):
        hp.load_state_dict(stepped(groups=["x", "y"]).state_dict())


def test_a_state_without_names_learns_nothing_and_loads():
    empty = LearnedHyperParams([], {}, {}, MetaAdamConfig())
    empty.load_state_dict(empty.state_dict())
    assert empty.values().numel() == 0


def test_every_loaded_entry_is_float64():
    a = stepped()
    state = {k: (v.float() if torch.is_tensor(v) else v) for k, v in a.state_dict().items()}
    b = learned()
    b.load_state_dict(state)
    for key in ("raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count", "skipped_count"):
        assert getattr(b, key).dtype == torch.float64, key


def test_a_grouped_shape_mismatch_says_per_group():
    hp = learned(groups=["a", "b"])
    state = stepped(groups=["a", "b"]).state_dict()
    state["exp_avg"] = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(LearnedStateError, match=_entry(
            "exp_avg", "has shape (2,), but this run learns alpha, beta1 per group (shape (2, 2))")):
        hp.load_state_dict(state)
