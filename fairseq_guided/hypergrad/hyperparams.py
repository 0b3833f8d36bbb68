"""Learned hyper-parameters: names, constrained parameterisations and the meta-optimizer.

Each learned value lives as an unconstrained raw number r with a per-hyper-parameter
steepness s (which acts as its own meta learning-rate multiplier):
    alpha, eps      value = exp(s * r)                  (positive scale)
    beta1, beta2    value = (1 - 1e-5) * sigmoid(s * r)  (inside (0, 1))
    weight_decay    value = s * r, r projected to >= 0  (so 0 is a value it can start from
                                                         and still move away from)
All state is a handful of device tensors of shape (K,), updated without host syncs.
With parameter groups (`groups`, see `param_groups.py`) each name has one value per
group, its own raw number and meta-Adam moments: the state is (G, K), every operation
elementwise, so one group learns exactly as the global value does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BETA_SCALE = 1.0 - 1e-5

# name -> parameterisation kind
PARAMETERISATION = {
    "alpha": "exp",
    "eps": "exp",
    "beta1": "sigmoid",
    "beta2": "sigmoid",
    "weight_decay": "nonneg_linear",
}


def check_initial_value(name: str, value: float, source: str) -> None:
    """Refuse an initial value outside the range `name`'s parameterisation reaches;
    the message starts with `source`, what set the value."""
    kind = PARAMETERISATION[name]
    ok = {
        "exp": value > 0 and math.isfinite(value),
        "sigmoid": 0.0 < value < BETA_SCALE,
        "nonneg_linear": value >= 0 and math.isfinite(value),
    }[kind]
    if not ok:
        allowed = {"exp": "> 0", "sigmoid": f"in (0, {BETA_SCALE})", "nonneg_linear": ">= 0"}[kind]
        raise ValueError(f"{source}: initial {name} = {value} is not allowed; it must be {allowed}")


def raw_from_value(name: str, value: float, steepness: float) -> float:
    kind = PARAMETERISATION[name]
    if kind == "exp":
        return math.log(value) / steepness
    if kind == "sigmoid":
        p = value / BETA_SCALE
        return math.log(p / (1.0 - p)) / steepness
    return value / steepness


def values_and_slopes(raw: torch.Tensor, kinds: list[str], steepness: torch.Tensor):
    """Activated values and d value / d raw, elementwise over the (K,) or (G, K) raw
    values (the last axis is the name)."""
    z = raw * steepness
    exp_v = torch.exp(z)
    sig = torch.sigmoid(z)
    values, slopes = [], []
    for i, kind in enumerate(kinds):
        if kind == "exp":
            values.append(exp_v[..., i])
            slopes.append(steepness[i] * exp_v[..., i])
        elif kind == "sigmoid":
            values.append(BETA_SCALE * sig[..., i])
            slopes.append(BETA_SCALE * steepness[i] * sig[..., i] * (1 - sig[..., i]))
        else:
            values.append(z[..., i])
            slopes.append(steepness[i].expand_as(z[..., i]))
    return torch.stack(values, dim=-1), torch.stack(slopes, dim=-1)


def usable(values: torch.Tensor, kinds: list[str]) -> torch.Tensor:
    """Elementwise: is each value finite and inside the range its parameterisation maps
    onto (the range an initial value must be in)? At an edge (alpha = exp(r) underflowed
    to 0, a beta saturated at 0 or 1 - 1e-5) the slope is 0, so the value could never move
    back."""
    ok = []
    for i, kind in enumerate(kinds):
        v = values[..., i]
        if kind == "exp":
            ok.append(torch.isfinite(v) & (v > 0))
        elif kind == "sigmoid":
            ok.append((v > 0) & (v < BETA_SCALE))
        else:
            ok.append(torch.isfinite(v) & (v >= 0))
    return torch.stack(ok, dim=-1)


class LearnedStateError(ValueError):
    """A checkpoint's learned state that cannot be resumed from; the message names the entry
    (the caller adds the file)."""


@dataclass
class MetaAdamConfig:
    lr: float = 3e-5
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 0.0  # 0 = no clipping of the raw-space hypergradient


class LearnedHyperParams:
    """The learned values, their raw form, and one Adam meta-optimizer per value.

    `groups`: None for one global value per name (shape (K,)), or the names of the
    parameter groups, each with its own value of every name (shape (G, K)).
    """

    def __init__(self, names, initial_values, steepness, meta: MetaAdamConfig, device=None,
                 groups=None):
        self.names = list(names)
        self.groups = None if groups is None else list(groups)
        if self.groups is not None and not self.groups:
            raise ValueError("groups: name at least one parameter group (or None for global values)")
        self.kinds = [PARAMETERISATION[n] for n in self.names]
        self.meta = meta
        shape = (len(self.names),) if self.groups is None else (len(self.groups), len(self.names))
        dev = device or torch.device("cpu")
        f64 = dict(dtype=torch.float64, device=dev)
        # float64 for the few scalars: a 3e-5 meta step on a float32 raw value near
        # logit(0.9) would be rounded away.
        self.steepness = torch.tensor([float(steepness[n]) for n in self.names], **f64)
        self.raw = torch.tensor(
            [raw_from_value(n, float(initial_values[n]), float(steepness[n])) for n in self.names],
            **f64,
        ).expand(shape).clone()
        self.exp_avg = torch.zeros(shape, **f64)
        self.exp_avg_sq = torch.zeros(shape, **f64)
        self.steps = torch.zeros(shape, **f64)  # per value: a skipped (non-finite) step does not count
        self.nonfinite_count = torch.zeros(shape, **f64)
        self.skipped_count = torch.zeros(shape, **f64)  # steps that would have broken a value
        self._nonneg = torch.tensor([kind == "nonneg_linear" for kind in self.kinds], device=dev)
        self._refresh()

    def _refresh(self):
        if self.names:
            self._values, self._slopes = values_and_slopes(self.raw, self.kinds, self.steepness)
        else:
            self._values = self._slopes = self.raw

    @property
    def device(self):
        return self.raw.device

    @property
    def shape(self) -> tuple:
        """(K,), or (G, K) with groups: the shape of a hypergradient."""
        return tuple(self.raw.shape)

    def values(self) -> torch.Tensor:
        """(K,) or (G, K) float64 tensor of the activated values, on the device."""
        return self._values

    def value(self, name: str, group: int | None = None) -> torch.Tensor:
        """0-d value of `name` (of parameter group `group` when there are groups)."""
        if (group is None) != (self.groups is None):
            raise ValueError(f"value({name!r}): give a group index exactly when the values are "
                             f"per group (groups: {self.groups})")
        i = self.names.index(name)
        return self._values[i] if group is None else self._values[group, i]

    def set_value(self, name: str, value: float, group: int | None = None) -> None:
        """Set one activated value (its meta-Adam state stays)."""
        check_initial_value(name, value, "set_value")
        i = self.names.index(name)
        raw = raw_from_value(name, value, float(self.steepness[i]))
        if group is None:
            self.raw[..., i] = raw
        else:
            self.raw[group, i] = raw
        self._refresh()

    def to(self, device):
        for key in ("steepness", "raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count", "skipped_count",
                    "_nonneg"):
            setattr(self, key, getattr(self, key).to(device))
        self._refresh()
        return self

    def meta_step(self, hypergrad: torch.Tensor) -> None:
        """One Adam step on the raw values given d L_guide / d value (shape (K,)).

        A non-finite entry leaves that value, its moments and its step count untouched and
        is counted in `nonfinite_count`; so does a step that would leave a value or a moment
        non-finite, or a value at the edge of its range (see `usable`), counted in
        `skipped_count`.
        """
        if not self.names:
            return
        m = self.meta
        g = hypergrad.to(self.raw) * self._slopes
        finite = torch.isfinite(g)  # before clipping, which would turn an inf into a full step
        if m.grad_clip > 0:
            g = g.clamp(-m.grad_clip, m.grad_clip)
        g = torch.where(finite, g, torch.zeros_like(g))
        steps = self.steps + finite.to(self.steps.dtype)
        exp_avg = torch.where(finite, m.beta1 * self.exp_avg + (1 - m.beta1) * g, self.exp_avg)
        exp_avg_sq = torch.where(
            finite, m.beta2 * self.exp_avg_sq + (1 - m.beta2) * g * g, self.exp_avg_sq
        )
        safe_steps = steps.clamp(min=1)
        m_hat = exp_avg / (1 - m.beta1**safe_steps)
        v_hat = exp_avg_sq / (1 - m.beta2**safe_steps)
        raw = torch.where(finite, self.raw - m.lr * m_hat / (v_hat.sqrt() + m.eps), self.raw)
        # built once: a host-to-device copy per meta step would cost a sync on CUDA
        raw = torch.where(self._nonneg, raw.clamp(min=0), raw)
        values, slopes = values_and_slopes(raw, self.kinds, self.steepness)
        # checked on the device, without a host sync: an inf alpha would make every
        # parameter NaN at the next update (and be checkpointed)
        ok = finite & usable(values, self.kinds) & torch.isfinite(exp_avg) & torch.isfinite(exp_avg_sq)
        self.raw = torch.where(ok, raw, self.raw)
        self.exp_avg = torch.where(ok, exp_avg, self.exp_avg)
        self.exp_avg_sq = torch.where(ok, exp_avg_sq, self.exp_avg_sq)
        self.steps = torch.where(ok, steps, self.steps)
        self.nonfinite_count = self.nonfinite_count + (~finite).to(self.steps.dtype)
        self.skipped_count = self.skipped_count + (finite & ~ok).to(self.steps.dtype)
        self._values = torch.where(ok, values, self._values)
        self._slopes = torch.where(ok, slopes, self._slopes)

    def state_dict(self) -> dict:
        # global values keep the layout of checkpoints written before groups existed
        grouped = {} if self.groups is None else {"groups": list(self.groups)}
        return {
            **grouped,
            "names": list(self.names),
            "raw": self.raw.cpu(),
            "exp_avg": self.exp_avg.cpu(),
            "exp_avg_sq": self.exp_avg_sq.cpu(),
            "steps": self.steps.cpu(),
            "nonfinite_count": self.nonfinite_count.cpu(),
            "skipped_count": self.skipped_count.cpu(),
            "steepness": self.steepness.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        dev = self.device
        self.skipped_count = torch.zeros_like(self.raw)  # absent from older checkpoints
        for key in ("raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count", "skipped_count"):
            if key in state:
                setattr(self, key, state[key].to(device=dev, dtype=torch.float64))
        # The steepness comes from the command line and is a meta-lr multiplier: a changed
        # --guided-steepness must keep the learned values. Every parameterisation acts on
        # s * raw, so raw' = raw * s_old / s_new; the raw-space hypergradient scales by
        # s_new / s_old, and so do the meta-Adam moments (squared for the second).
        old = state.get("steepness")
        if old is not None:
            ratio = old.to(device=dev, dtype=torch.float64) / self.steepness
            self.raw = self.raw * ratio
            self.exp_avg = self.exp_avg / ratio
            self.exp_avg_sq = self.exp_avg_sq / ratio**2
        self._refresh()

    def check_state(self, state) -> None:
        """Refuse a checkpoint's learned state this run cannot continue from, naming the
        entry: another list of names or groups, a missing or misshapen tensor, or values
        and moments a meta step never leaves (non-finite, out of range)."""
        def fail(entry, why):
            raise LearnedStateError(f"guided_hyper[{entry!r}] {why}; resume from a checkpoint whose "
                                    f"learned state is whole, or pass --reset-optimizer to start the "
                                    f"optimizer and the learned values afresh")

        if not isinstance(state, dict):
            raise LearnedStateError(f"guided_hyper is a {type(state).__name__}, not a dict; pass "
                                    f"--reset-optimizer to start the learned values afresh")
        if "names" not in state:
            fail("names", "is missing")
        if list(state["names"]) != self.names:
            raise LearnedStateError(
                f"checkpoint learns hyper-parameters {state['names']} but --guided-hparams asks "
                f"for {self.names}; use the same list, or --reset-optimizer to start them afresh"
            )
        if state.get("groups") != self.groups:
            def said(groups):
                return "one global value each" if groups is None else f"one value per group {groups}"
            raise LearnedStateError(
                f"checkpoint learns {said(state.get('groups'))} but --guided-groups asks for "
                f"{said(self.groups)}; resume with the checkpoint's --guided-groups, or "
                f"--reset-optimizer to start the values afresh"
            )
        shapes = {key: self.shape for key in ("raw", "exp_avg", "exp_avg_sq", "steps", "nonfinite_count")}
        shapes.update({key: shape for key, shape in (("skipped_count", self.shape),
                                                     ("steepness", (len(self.names),))) if key in state})
        for key, shape in shapes.items():
            t = state.get(key)
            if t is None:
                fail(key, "is missing")
            if not torch.is_tensor(t):
                fail(key, f"is a {type(t).__name__}, not a tensor")
            if tuple(t.shape) != shape:
                fail(key, f"has shape {tuple(t.shape)}, but this run learns {', '.join(self.names)}"
                          f"{'' if self.groups is None else ' per group'} (shape {shape})")
            if not torch.isfinite(t).all():
                fail(key, f"is not finite ({t.tolist()})")
            if key != "raw" and key != "exp_avg" and not (t >= 0).all():
                fail(key, f"has a negative entry ({t.tolist()})")
        if not self.names:
            return
        steepness = (state["steepness"] if "steepness" in state else self.steepness.cpu()).double()
        if not (steepness > 0).all():
            fail("steepness", f"is not > 0 ({steepness.tolist()})")
        values, _ = values_and_slopes(state["raw"].double().cpu(), self.kinds, steepness)
        ok = usable(values, self.kinds)
        if not ok.all():
            i = int((~ok).nonzero()[0][-1])
            fail("raw", f"gives {self.names[i]} = {values[..., i].tolist()}, outside its range")
