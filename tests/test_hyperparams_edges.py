"""The learned hyper-parameters at their edges, in process (mutation pass over hypergrad/:
behaviour that was only reached through fairseq-train subprocesses): the initial-value
checks and `usable` on both sides of every boundary, the dtype and device of every tensor
of the learned state, the meta step against an independent float64 Adam (clipping, the
skip paths, the counts), and HypergradientRows' sums and the arguments it forwards.

Device checks use torch's "meta" device: it exists on any machine, has no data, and
refuses to mix with CPU tensors, so "follows the requested device" shows without a GPU."""
import math

import pytest
import torch

from fairseq_guided.hypergrad import OPTIMIZERS
from fairseq_guided.hypergrad._ops import foreach_ema_square_
from fairseq_guided.hypergrad.hyperparams import (
    BETA_SCALE, PARAMETERISATION, LearnedHyperParams, MetaAdamConfig, check_initial_value, usable,
)
from fairseq_guided.hypergrad.rows import HypergradientRows

F64 = torch.float64
META = torch.device("meta")
CPU = torch.device("cpu")
NAMES = ["alpha", "beta1", "beta2", "eps", "weight_decay"]
INIT = {"alpha": 1.3, "beta1": 0.9, "beta2": 0.98, "eps": 1e-3, "weight_decay": 0.01}
STEEP = {"alpha": 2.0, "beta1": 0.5, "beta2": 1.0, "eps": 3.0, "weight_decay": 1.0}
STATE_KEYS = ("steepness", "raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count", "skipped_count",
              "_values", "_slopes")


def learned(names=NAMES, meta=None, **kw):
    return LearnedHyperParams(names, {n: INIT[n] for n in names}, {n: STEEP[n] for n in names},
                              meta or MetaAdamConfig(lr=1e-2), **kw)


def assert_state_on(hp, device):
    """Every tensor of the learned state is float64 (the mask bool) and on `device`."""
    for key in STATE_KEYS:
        t = getattr(hp, key)
        assert (t.dtype, t.device) == (F64, device), key
    assert (hp._nonneg.dtype, hp._nonneg.device) == (torch.bool, device)
    assert hp.device == device and hp.values().device == device


# -- initial values ----------------------------------------------------------------------

@pytest.mark.parametrize("name,value,allowed", [
    ("alpha", -1.0, "> 0"), ("alpha", 0.0, "> 0"), ("eps", math.inf, "> 0"), ("alpha", math.nan, "> 0"),
    ("beta1", BETA_SCALE, "in (0, 0.99999)"), ("beta2", 1.0, "in (0, 0.99999)"),
    ("beta1", 0.0, "in (0, 0.99999)"), ("beta1", math.nan, "in (0, 0.99999)"),
    ("weight_decay", -0.5, ">= 0"), ("weight_decay", math.inf, ">= 0"), ("weight_decay", math.nan, ">= 0"),
])
def test_an_initial_value_outside_its_range_is_refused_with_the_whole_message(name, value, allowed):
    """The refusal names the source, the name, the value and its kind's allowed range."""
    with pytest.raises(ValueError) as err:
        check_initial_value(name, value, "--guided-init")
    assert str(err.value) == f"--guided-init: initial {name} = {value} is not allowed; it must be {allowed}"


@pytest.mark.parametrize("name,value", [
    ("weight_decay", 0.0), ("weight_decay", 5e-324), ("alpha", 5e-324), ("eps", 1e300),
    ("beta1", math.nextafter(BETA_SCALE, 0.0)), ("beta2", 1e-300),
])
def test_an_initial_value_just_inside_its_range_is_taken(name, value):
    """Weight decay 0 is allowed (>= 0); a beta just below BETA_SCALE is too."""
    assert check_initial_value(name, value, "--guided-init") is None
    hp = LearnedHyperParams([name], {name: value}, {name: 1.0}, MetaAdamConfig())
    assert usable(hp.values(), hp.kinds).tolist() == [True]
    assert math.isclose(hp.values().item(), value, rel_tol=1e-9) or value < 1e-300


def test_usable_at_every_edge_of_every_kind():
    """usable: exp needs finite > 0, sigmoid (0, BETA_SCALE) open, nonneg_linear finite >= 0."""
    kinds = ["exp", "sigmoid", "nonneg_linear"]
    below = math.nextafter(BETA_SCALE, 0.0)
    cases = [  # value (same for every kind) -> (exp, sigmoid, nonneg_linear)
        (0.0, (False, False, True)),
        (-0.0, (False, False, True)),
        (5e-324, (True, True, True)),
        (-5e-324, (False, False, False)),
        (below, (True, True, True)),
        (BETA_SCALE, (True, False, True)),
        (1.0, (True, False, True)),
        (math.inf, (False, False, False)),
        (-math.inf, (False, False, False)),
        (math.nan, (False, False, False)),
    ]
    values = torch.tensor([[v] * 3 for v, _ in cases], dtype=F64)
    got = usable(values, kinds)
    assert got.dtype == torch.bool and got.shape == (len(cases), 3)
    assert [tuple(r) for r in got.tolist()] == [want for _, want in cases]
    # a (K,) vector and a kind order that differs from the one above
    assert usable(torch.tensor([0.0, 0.0, 0.5], dtype=F64), ["nonneg_linear", "exp", "sigmoid"]).tolist() \
        == [True, False, True]


# -- construction, to(), load: dtype and device ------------------------------------------

def test_no_groups_is_refused_with_the_whole_message():
    """groups=[] (not None) is refused, saying what to pass instead."""
    with pytest.raises(ValueError) as err:
        learned(groups=[])
    assert str(err.value) == "groups: name at least one parameter group (or None for global values)"


@pytest.mark.parametrize("groups", [None, ["enc", "dec"]])
def test_state_is_float64_on_the_cpu_by_default(groups):
    """device=None: every tensor float64 on the CPU, the moments and counts zero."""
    hp = learned(groups=groups)
    assert_state_on(hp, CPU)
    shape = (5,) if groups is None else (2, 5)
    for key in ("exp_avg", "exp_avg_sq", "steps", "nonfinite_count", "skipped_count"):
        assert torch.equal(getattr(hp, key), torch.zeros(shape, dtype=F64)), key
    assert hp._nonneg.tolist() == [False, False, False, False, True]


def test_device_none_means_the_cpu_even_when_torch_defaults_elsewhere():
    """device=None is the CPU, not torch's default device (set here to meta)."""
    before = torch.get_default_device()
    torch.set_default_device(META)
    try:
        hp = learned()
    finally:
        torch.set_default_device(before)
    assert_state_on(hp, CPU)
    torch.testing.assert_close(hp.values(), torch.tensor([INIT[n] for n in NAMES], dtype=F64),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("groups", [None, ["enc", "dec"]])
def test_state_is_built_on_the_device_asked_for(groups):
    """device=meta: every tensor, the nonneg mask included, lives there in float64."""
    hp = learned(device=META, groups=groups)
    assert_state_on(hp, META)
    assert hp.shape == ((5,) if groups is None else (2, 5))


def test_to_moves_every_tensor_and_keeps_float64():
    """to(device) moves every entry (mask, values and slopes too); to(cpu) is a no-op copy."""
    hp = learned()
    hp.meta_step(torch.tensor([0.1, -0.2, 0.3, 0.4, -0.5], dtype=F64))
    before = {k: getattr(hp, k).clone() for k in STATE_KEYS}
    assert hp.to(CPU) is hp
    assert_state_on(hp, CPU)
    for key, t in before.items():
        assert torch.equal(getattr(hp, key), t), key
    assert hp.to(META) is hp
    assert_state_on(hp, META)


def test_meta_step_moves_a_cpu_hypergradient_to_the_state_device():
    """A hypergradient on another device/dtype is converted to the raw values' own."""
    hp = learned(device=META)
    hp.meta_step(torch.tensor([0.1, -0.2, 0.3, 0.4, -0.5], dtype=torch.float32))  # on the CPU
    assert_state_on(hp, META)
    cpu = learned()
    cpu.meta_step(torch.tensor([0.1, -0.2, 0.3, 0.4, -0.5], dtype=torch.float32))
    assert_state_on(cpu, CPU)
    assert cpu.steps.tolist() == [1.0] * 5


@pytest.mark.parametrize("device", [CPU, META], ids=["cpu", "meta"])
def test_load_state_dict_lands_float64_on_the_state_device(device):
    """A float32 checkpoint state loads as float64 tensors on the learned state's device."""
    a = learned()
    for h in ([0.1, -0.2, 0.3, 0.4, -0.5], [math.nan, 0.1, 0.2, -0.3, 0.4]):
        a.meta_step(torch.tensor(h, dtype=F64))
    state = {k: (v.float() if torch.is_tensor(v) else v) for k, v in a.state_dict().items()}
    b = learned(device=device)
    b.load_state_dict(state)
    assert_state_on(b, device)
    if device == CPU:
        assert torch.equal(b.raw, a.raw.float().double())
        assert b.nonfinite_count.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


# -- the meta step against an independent float64 Adam ------------------------------------

def _exp(z):
    try:
        return math.exp(z)
    except OverflowError:
        return math.inf


def _sigmoid(z):
    return 1.0 / (1.0 + _exp(-z)) if z >= 0 else _exp(z) / (1.0 + _exp(z))


def _value_slope(kind, r, s):
    z = s * r
    if kind == "exp":
        return _exp(z), s * _exp(z)
    if kind == "sigmoid":
        p = _sigmoid(z)
        return BETA_SCALE * p, BETA_SCALE * s * p * (1 - p)
    return z, s


def _usable(kind, v):
    if kind == "exp":
        return math.isfinite(v) and v > 0
    if kind == "sigmoid":
        return 0 < v < BETA_SCALE
    return math.isfinite(v) and v >= 0


class ReferenceMetaAdam:
    """One value's meta-Adam in plain Python floats, written from the docstrings: the
    hypergradient is chained to raw space by the slope at the current value, a non-finite
    one skips and is counted (an inf too, with clipping on), it is clipped to +-grad_clip,
    bias correction uses the count
    of steps taken, a nonneg raw is projected to >= 0, and a step leaving the value
    outside its range or a moment non-finite is skipped and counted."""

    def __init__(self, kind, value, s, cfg):
        self.kind, self.s, self.cfg = kind, s, cfg
        if kind == "exp":
            self.r = math.log(value) / s
        elif kind == "sigmoid":
            p = value / BETA_SCALE
            self.r = math.log(p / (1 - p)) / s
        else:
            self.r = value / s
        self.m = self.v = 0.0
        self.n = self.nonfinite = self.skipped = 0

    def step(self, h):
        c = self.cfg
        g = h * _value_slope(self.kind, self.r, self.s)[1]
        if not math.isfinite(g):
            self.nonfinite += 1
            return
        if c.grad_clip > 0:
            g = min(max(g, -c.grad_clip), c.grad_clip)
        n = self.n + 1
        m = c.beta1 * self.m + (1 - c.beta1) * g
        v = c.beta2 * self.v + (1 - c.beta2) * g * g
        m_hat, v_hat = m / (1 - c.beta1**n), v / (1 - c.beta2**n)
        r = self.r - c.lr * m_hat / (math.sqrt(v_hat) + c.eps)
        if self.kind == "nonneg_linear":
            r = max(r, 0.0)
        value = _value_slope(self.kind, r, self.s)[0]
        if _usable(self.kind, value) and math.isfinite(m) and math.isfinite(v):
            self.r, self.m, self.v, self.n = r, m, v, n
        else:
            self.skipped += 1

    @property
    def value(self):
        return _value_slope(self.kind, self.r, self.s)[0]


def run_both(names, init, steep, cfg, hypergrads, groups=None):
    hp = LearnedHyperParams(names, init, steep, cfg, groups=groups)
    rows = 1 if groups is None else len(groups)
    refs = [[ReferenceMetaAdam(PARAMETERISATION[n], init[n], steep[n], cfg) for n in names]
            for _ in range(rows)]
    for h in hypergrads:
        h = torch.tensor(h, dtype=F64)
        hp.meta_step(h)
        for ref_row, h_row in zip(refs, h.reshape(rows, len(names)).tolist()):
            for ref, x in zip(ref_row, h_row):
                ref.step(x)
        assert_state_on(hp, CPU)
        compare(hp, refs, groups)
    return hp


def compare(hp, refs, groups):
    def field(f):
        t = torch.tensor([[f(r) for r in row] for row in refs], dtype=F64)
        return t[0] if groups is None else t

    for key, f in (("raw", lambda r: r.r), ("exp_avg", lambda r: r.m), ("exp_avg_sq", lambda r: r.v)):
        torch.testing.assert_close(getattr(hp, key), field(f), rtol=1e-12, atol=0, msg=key)
    torch.testing.assert_close(hp.values(), field(lambda r: r.value), rtol=1e-12, atol=0)
    for key, f in (("steps", lambda r: r.n), ("nonfinite_count", lambda r: r.nonfinite),
                   ("skipped_count", lambda r: r.skipped)):
        assert torch.equal(getattr(hp, key), field(f)), (key, getattr(hp, key), field(f))


def test_meta_step_equals_float64_adam_with_clipping_nan_and_the_nonneg_projection():
    """Nine meta steps: clipped on both sides, NaN and inf entries skipped (an inf is not
    clipped into a full step), weight decay projected onto 0 (and stepped from there),
    against the plain-Python reference."""
    cfg = MetaAdamConfig(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-8, grad_clip=0.8)
    gen = torch.Generator().manual_seed(5)
    hypergrads = [
        [0.3, -0.2, 0.1, 0.05, 2.0],          # weight decay 0.01 - ~0.05: projected to 0
        [math.nan, 0.4, math.nan, -0.3, 1.0],  # at 0, pushed down again: stays 0, counts
        [-50.0, 30.0, -1e3, 0.2, -3.0],        # clipped from below and above
        [math.nan, -40.0, 25.0, math.nan, 0.5],
        [math.inf, 0.1, -math.inf, 0.2, -0.1],
    ] + (torch.randn(4, 5, generator=gen, dtype=F64) * 3).tolist()
    hp = run_both(NAMES, INIT, STEEP, cfg, hypergrads)
    assert hp.nonfinite_count.tolist() == [3, 0, 2, 1, 0]
    assert hp.skipped_count.tolist() == [0] * 5
    assert hp.steps.tolist() == [6, 9, 7, 8, 9]


def test_meta_step_weight_decay_at_zero_is_projected_and_counted_as_a_step():
    """Weight decay 0 with a positive hypergradient: raw stays exactly 0, the step counts."""
    cfg = MetaAdamConfig(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    hp = LearnedHyperParams(["weight_decay", "alpha"], {"weight_decay": 0.0, "alpha": 1.0},
                            {"weight_decay": 2.0, "alpha": 1.0}, cfg)
    hp.meta_step(torch.tensor([0.25, 0.0], dtype=F64))
    assert hp.raw.tolist() == [0.0, 0.0] and hp.values()[0].item() == 0.0
    assert hp.steps.tolist() == [1.0, 1.0] and hp.skipped_count.tolist() == [0.0, 0.0]
    assert hp.exp_avg.tolist() == [(1 - 0.9) * 0.25 * 2.0, 0.0]


def test_meta_steps_that_would_break_a_value_or_a_moment_are_skipped_and_counted():
    """lr 1000: alpha under/overflowing, a beta saturating at BETA_SCALE or 0, g^2
    overflowing to inf: each step skipped (value, moments, count kept) and counted in
    skipped_count, not nonfinite_count; a usable step in the same call goes through."""
    cfg = MetaAdamConfig(lr=1000.0, beta1=0.9, beta2=0.999, eps=1e-8)
    names = ["alpha", "beta1", "eps", "weight_decay"]
    init = {"alpha": 1.0, "beta1": 0.5, "eps": 1e-3, "weight_decay": 0.5}
    steep = {n: 1.0 for n in names}
    hypergrads = [
        [1.0, -1.0, 1e200, -1.0],      # exp(-1000) = 0; sigmoid(+1000) = 1; g^2 = inf; fine
        [-1e-3, 1e-3, 0.0, math.nan],  # exp(+1000) = inf; sigmoid(-1000) = 0; g = 0: a step
        [0.0, 0.0, -1.0, 1.0],         # zero steps go through; eps: exp(~737) = inf
        [math.inf, -math.inf, math.nan, -math.inf],  # unclipped: non-finite, not skipped
    ]
    hp = run_both(names, init, steep, cfg, hypergrads)
    assert hp.skipped_count.tolist() == [2.0, 2.0, 2.0, 0.0]
    assert hp.nonfinite_count.tolist() == [1.0, 1.0, 1.0, 2.0]
    assert hp.steps.tolist() == [1.0, 1.0, 1.0, 2.0]
    torch.testing.assert_close(hp.values()[:3], torch.tensor([1.0, 0.5, 1e-3], dtype=F64), rtol=1e-12, atol=0)
    assert torch.isfinite(hp.exp_avg_sq).all()


def test_grouped_meta_step_equals_the_reference_per_value():
    """(G, K) state: each (group, name) entry is its own reference Adam, skips included."""
    cfg = MetaAdamConfig(lr=0.5, beta1=0.8, beta2=0.99, eps=1e-8, grad_clip=2.0)
    names = ["alpha", "beta2", "weight_decay"]
    hypergrads = [
        [[0.5, -1.0, 3.0], [-0.5, 1.0, -3.0]],
        [[math.nan, 40.0, 1.0], [1e250, -40.0, math.nan]],
        [[0.2, 0.3, -0.4], [-0.2, -0.3, 0.4]],
    ]
    hp = run_both(names, INIT, STEEP, cfg, hypergrads, groups=["enc", "dec"])
    assert hp.nonfinite_count.tolist() == [[1, 0, 0], [0, 0, 1]]


# -- HypergradientRows ---------------------------------------------------------------------

class RecordingOptimizer:
    """dot_row returns the guidance gradient as the row, keyed by (group, param); every
    call is recorded; combine_rows scales a key's summed rows by its own weight (CPU)."""

    def __init__(self, learned_state, weights, param_groups=None):
        self.learned, self.weights, self.param_groups = learned_state, weights, param_groups
        self.calls, self.combined = [], []

    def dot_row(self, group_index, param, guide_grad, grad=None, region=None, disposable=False):
        self.calls.append((group_index, param, guide_grad, grad, region, disposable))
        return (group_index, param), guide_grad

    def combine_rows(self, key, rows):
        self.combined.append((key, rows.tolist()))
        return rows.sum(0) * self.weights[key]


def t(*xs):
    return torch.tensor(xs, dtype=F64)


def test_rows_add_forwards_every_argument_to_dot_row():
    """add hands group, param, guidance gradient, grad, region and disposable on as given."""
    opt = RecordingOptimizer(learned(["alpha"]), {})
    rows = HypergradientRows(opt)
    gg, grad, region = t(1.0), t(2.0), slice(3, 7)
    rows.add(1, "p", gg, grad, region, True)
    rows.add(0, "q", gg)
    rows.add(2, "r", gg, region=region, disposable=True)
    (c1, c2, c3) = opt.calls
    assert c1[:2] == (1, "p") and c1[2] is gg and c1[3] is grad and c1[4] == region and c1[5] is True
    assert c2[:2] == (0, "q") and c2[3:] == (None, None, False)
    assert c3[:2] == (2, "r") and c3[3] is None and c3[4] == region and c3[5] is True
    assert list(rows.rows) == [(1, "p"), (0, "q"), (2, "r")]


def test_rows_total_sums_each_keys_combined_rows_exactly():
    """Global values: total = sum over keys of combine_rows(key, that key's rows stacked)."""
    opt = RecordingOptimizer(learned(["alpha", "beta1"]), {(0, "a"): 2.0, (1, "b"): -0.5, (0, "c"): 0.25})
    rows = HypergradientRows(opt)
    rows.add(0, "a", t(1.0, 2.0))
    rows.add(1, "b", t(4.0, 8.0))
    rows.add(0, "a", t(0.5, -1.0))
    rows.add(0, "c", t(-16.0, 4.0))
    total = rows.total()
    # a: (1.5, 1) * 2 = (3, 2); b: (4, 8) * -0.5 = (-2, -4); c: (-16, 4) / 4 = (-4, 1)
    assert total.dtype == F64 and total.device == CPU
    assert total.tolist() == [-3.0, -1.0]
    assert opt.combined == [((0, "a"), [[1.0, 2.0], [0.5, -1.0]]), ((1, "b"), [[4.0, 8.0]]),
                            ((0, "c"), [[-16.0, 4.0]])]
    assert HypergradientRows(opt).total().tolist() == [0.0, 0.0]  # nothing added: zeros


def test_rows_total_per_group_adds_each_key_into_its_learned_group():
    """Grouped values: each key's part goes to its param group's learned group (summed)."""
    state = learned(["alpha", "beta1"], groups=["enc", "dec", "rest"])
    groups = [{"learned_group": 1}, {"learned_group": 0}, {"learned_group": 1}]
    opt = RecordingOptimizer(state, {(0, "a"): 2.0, (1, "b"): -1.0, (2, "c"): 0.5}, groups)
    rows = HypergradientRows(opt)
    rows.add(0, "a", t(1.0, 2.0))
    rows.add(1, "b", t(3.0, -4.0))
    rows.add(2, "c", t(8.0, 6.0))
    rows.add(0, "a", t(0.25, 0.5))
    total = rows.total()
    assert total.dtype == F64 and total.shape == (3, 2)
    # dec: a (1.25, 2.5) * 2 + c (8, 6) / 2 = (6.5, 8); enc: -(3, -4); rest: nothing
    assert total.tolist() == [[-3.0, 4.0], [6.5, 8.0], [0.0, 0.0]]


@pytest.mark.parametrize("groups", [None, ["enc", "dec"]])
def test_rows_total_lands_on_the_learned_values_device(groups):
    """total() is on the learned values' device (meta), the CPU parts moved there."""
    state = learned(["alpha", "beta1"], device=META, groups=groups)
    param_groups = None if groups is None else [{"learned_group": 1}, {"learned_group": 0}]
    opt = RecordingOptimizer(state, {(0, "a"): 1.0, (1, "b"): 1.0}, param_groups)
    rows = HypergradientRows(opt)
    rows.add(0, "a", t(1.0, 2.0))
    rows.add(1, "b", t(3.0, 4.0))
    total = rows.total()
    assert (total.dtype, total.device, tuple(total.shape)) == (F64, META, state.shape)


def test_rows_over_regions_of_a_flat_tensor_sum_to_the_whole_tensors_hypergradient():
    """Guided Adam: rows added per region (with region-sized guidance gradients) of one
    flat parameter give the hypergradient of the whole tensor."""
    gen = torch.Generator().manual_seed(7)
    names = ["alpha", "beta1", "beta2", "eps", "weight_decay"]
    state = LearnedHyperParams(names, {"alpha": 1.1, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3,
                                       "weight_decay": 0.05}, {n: 1.0 for n in names}, MetaAdamConfig())
    flat = torch.randn(12, generator=gen, dtype=F64).requires_grad_()
    opt = OPTIMIZERS["adam"]([flat], state, lr=0.05, beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.05)
    for _ in range(2):
        flat.grad = torch.randn(12, generator=gen, dtype=F64)
        opt.step()
    guide = torch.randn(12, generator=gen, dtype=F64)
    whole = opt.hypergradient([guide.clone()])
    rows = opt.hypergradient_rows()
    rows.add(0, flat, guide[:5].clone(), region=slice(0, 5))
    rows.add(0, flat, guide[5:].clone(), region=slice(5, 12), disposable=True)
    torch.testing.assert_close(rows.total(), whole, rtol=1e-12, atol=1e-300)
    assert whole.abs().min() > 0


# -- _ops ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_foreach_ema_square_with_a_number_is_torchs_fused_kernel_bit_for_bit(dtype):
    """A Python-number decay uses mul_ + addcmul_ (torch Adam's kernels), bit for bit;
    the inputs are ones where squaring first and scaling after rounds differently."""
    gen = torch.Generator().manual_seed(0)
    averages = [torch.rand(257, generator=gen).to(dtype) for _ in range(2)]
    values = [torch.randn(257, generator=gen).to(dtype) for _ in range(2)]
    decay = 0.999
    fused = [a.clone().mul_(decay).addcmul_(v, v, value=1 - decay) for a, v in zip(averages, values)]
    unfused = [a * decay + (v * v) * (1 - decay) for a, v in zip(averages, values)]
    assert any(not torch.equal(f, u) for f, u in zip(fused, unfused))  # the inputs can tell
    out = [a.clone() for a in averages]
    foreach_ema_square_(out, values, decay)
    for o, f in zip(out, fused):
        assert torch.equal(o, f)
    # a 0-d tensor decay (a learned beta2) gives the same up to rounding
    out_t = [a.clone() for a in averages]
    foreach_ema_square_(out_t, values, torch.tensor(decay, dtype=dtype))
    for o, f in zip(out_t, fused):
        torch.testing.assert_close(o, f)
