"""The base of the guided torch optimizers: an update that takes some hyper-parameters
from a `LearnedHyperParams`, and d L_guide / d value for each learned one.

Pure torch. Each optimizer (adam.py, lamb.py, adafactor.py) adds its update and the
derivative of that update; the fairseq shells in `fairseq_guided.optim` only translate
configs. `alpha` multiplies each group's scheduled lr; the other learned names replace
the group's fixed value. The meta step is the caller's (see `LearnedHyperParams.meta_step`).

Per-group values (`LearnedHyperParams(groups=...)`): every torch param group carries
`learned_group`, the index of the values its tensors use. A tensor's dot products then
combine with its own group's values and add into that group's row of the (G, K)
hypergradient: the same passes as one global value, only the final sums are split.
"""
from __future__ import annotations

import torch

from .hyperparams import LearnedHyperParams, LearnedStateError
from .rows import HypergradientRows

LOW_PRECISION = (torch.float16, torch.bfloat16)


class GuidedOptimizerBase(torch.optim.Optimizer):
    """A torch optimizer whose update reads some hyper-parameters from `learned` and that
    can differentiate its last step with respect to them.

    step() updates every tensor of a group as the stock optimizer would, with the learned
    values as 0-d device tensors (no host sync). After it, the hypergradient of a guidance
    loss L_guide at the new parameters comes in two phases: dot_row() (through
    HypergradientRows.add) forms, per tensor, the few inner products of its guidance
    gradient with tensors the update left behind, so the gradient can be freed at once;
    combine_rows() (HypergradientRows.total) does the scalar algebra once per meta step.
    A subclass gives init_state, update_one (and update_many for foreach kernels),
    row_one and combine_one; its FIXED_HPARAMS are what it can learn besides alpha.
    state_dict() adds the learned values (`guided_hyper`), the lrs of the last step and
    the grouping record, and load_state_dict() refuses learned state it cannot resume.
    """

    # hyper-parameters the update has (besides lr, which alpha scales)
    FIXED_HPARAMS: tuple[str, ...] = ()
    # True when the update and its derivative act elementwise, so any slice of a flat
    # parameter buffer can be differentiated on its own (fairseq's flat fp16 masters)
    ELEMENTWISE = False

    @classmethod
    def learnable(cls) -> tuple[str, ...]:
        return ("alpha",) + cls.FIXED_HPARAMS

    def __init__(self, params, defaults, learned: LearnedHyperParams, keep_step_grad=False,
                 foreach=True):
        super().__init__(params, defaults)
        # foreach: update all tensors of a group that share device, dtype and step count
        # with one kernel per operation (torch's foreach ops), not a loop over tensors
        self.foreach = foreach
        self._dots_cache = (None, {})
        unknown = [n for n in learned.names if n not in self.learnable()]
        if unknown:
            raise ValueError(f"{type(self).__name__} cannot learn {unknown}; it can learn {self.learnable()}")
        self.learned = learned
        self._check_learned_groups()
        # which parameter is in which learned group, by name (a dict the fairseq shell sets
        # with --guided-groups): checkpointed, and a resume must rebuild the same
        self.grouping_record = None
        # Train-batch guidance differentiates the previous update when the next gradient
        # arrives, so the gradient that update used must be kept.
        self.keep_step_grad = keep_step_grad
        self.last_step_lrs = [g["lr"] for g in self.param_groups]
        self.step_count = 0  # lets a caller see that a wrapper (AMP) skipped the step

    def _check_learned_groups(self):
        """Per-group values need every param group to name its values, and global ones none."""
        tags = [g.get("learned_group") for g in self.param_groups]
        if self.learned.groups is None:
            if any(t is not None for t in tags):
                raise ValueError("param groups name learned groups, but the learned values are global")
            return
        count = len(self.learned.groups)
        if not all(isinstance(t, int) and 0 <= t < count for t in tags):
            raise ValueError(f"with {count} learned groups every param group needs "
                             f"learned_group in 0..{count - 1}; got {tags}")

    # -- hyper-parameter values -------------------------------------------------------
    def alpha(self, group=None):
        """alpha for a param group (the first by default), or 1.0 when it is not learned."""
        if "alpha" not in self.learned.names:
            return 1.0
        group = self.param_groups[0] if group is None else group
        return self.learned.value("alpha", group.get("learned_group"))

    def hparams(self, group, dtype, lr=None):
        """The values the update uses for one group: learned ones as 0-d tensors."""
        hp = {name: group[name] for name in self.FIXED_HPARAMS}
        learned_group = group.get("learned_group")  # None: global values
        for name in self.learned.names:
            if name != "alpha":
                hp[name] = self.learned.value(name, learned_group).to(dtype)
        alpha = self.alpha(group)
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.to(dtype)
        hp["lr"] = (group["lr"] if lr is None else lr) * alpha
        return hp

    def effective_lr(self):
        """alpha x scheduled lr of the first group (a device tensor when alpha is learned)."""
        return self.param_groups[0]["lr"] * self.alpha()

    def effective_lrs(self):
        """{learned group index: alpha x scheduled lr} for the param groups that learn per
        group (empty with global values)."""
        return {g["learned_group"]: g["lr"] * self.alpha(g) for g in self.param_groups
                if g.get("learned_group") is not None}

    # -- the update -------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for (dtype, _device, _step), batch in self._batches(group).items():
                hp = self.hparams(group, dtype)
                if self.foreach:
                    self.update_many([b[1] for b in batch], [b[2] for b in batch],
                                     [b[3] for b in batch], group, hp)
                else:
                    for _, p32, grad, state in batch:
                        self.update_one(p32, grad, state, group, hp)
                for p, p32, grad, state in batch:
                    if p32 is not p:
                        p.data.copy_(p32)
                    if self.keep_step_grad:
                        state["step_grad"] = grad.detach().clone()
        self.last_step_lrs = [g["lr"] for g in self.param_groups]
        self.step_count += 1
        return loss

    def _batches(self, group):
        """The group's tensors with a gradient, as (param, fp32 view or copy, grad, state),
        batched by what one foreach call needs in common: dtype, device and step count."""
        batches = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            # --memory-efficient-fp16 hands over half-precision parameters: update an fp32
            # copy with fp32 state, as fairseq's own optimizers do
            low = p.dtype in LOW_PRECISION
            p32 = p.data.float() if low else p
            grad = p.grad.float() if low else p.grad
            state = self.state[p]
            if not state:
                self.init_state(p32, state, group)
            key = (p32.dtype, p32.device, state["step"])
            batches.setdefault(key, []).append((p, p32, grad, state))
        return batches

    # -- its derivative -----------------------------------------------------------------
    def math_names(self):
        return ["lr" if n == "alpha" else n for n in self.learned.names]

    def stepped_params(self):
        """(group index, param) for every parameter the last step updated, in order."""
        return [
            (gi, p) for gi, g in enumerate(self.param_groups) for p in g["params"] if p in self.state
        ]

    @torch.no_grad()
    def dot_row(self, group_index, param, guide_grad, grad=None, region=None, disposable=False):
        """One parameter tensor's dot products with its guidance gradient, and the key
        (group, dtype, step) of the rows that combine with it (see HypergradientRows).

        `param` holds theta_{t+1}; `grad` is the gradient the update used (default:
        param.grad, or the kept one in train-batch mode). `region` (a slice of the
        flattened tensor) restricts it to part of a flat buffer; `guide_grad` then covers
        that part only. `disposable`: the caller frees guide_grad afterwards (it may be
        overwritten).
        """
        group = self.param_groups[group_index]
        state = self.state[param]
        if grad is None:
            grad = state["step_grad"] if self.keep_step_grad else param.grad
        if region is not None:
            if not self.ELEMENTWISE:
                raise ValueError(f"{type(self).__name__} needs whole tensors, not a region of a flat buffer")
            numel = param.numel()
            param, grad = param.reshape(-1)[region], grad.reshape(-1)[region]
            state = {k: (v.reshape(-1)[region] if torch.is_tensor(v) and v.numel() == numel else v)
                     for k, v in state.items()}
            guide_grad = guide_grad.reshape(-1)
        if param.dtype in LOW_PRECISION:
            param, grad = param.float(), grad.float()
        hp = self._hparams_for_dots(group_index, param.dtype)
        row = self.row_one(self.math_names(), guide_grad.to(param.dtype), param, grad, state, group, hp,
                           disposable)
        return (group_index, param.dtype, state["step"]), row

    def combine_rows(self, key, rows):
        """(K,) float64 d L_guide / d value from the stacked rows of one key."""
        group_index, _, step = key
        hp = self._hparams_for_dots(group_index, torch.float64)
        out = self.combine_one(self.math_names(), rows.to(torch.float64), step,
                               self.param_groups[group_index], hp)
        if "alpha" in self.learned.names:
            i = self.learned.names.index("alpha")
            out[i] = out[i] * self.last_step_lrs[group_index]  # d/d alpha = sched_lr d/d lr
        return torch.stack(out)

    def _hparams_for_dots(self, group_index, dtype):
        # dot_row runs once per tensor: convert the learned values once per meta step,
        # not once per tensor (each conversion is a kernel launch on the device). The lr
        # is the one the differentiated step used, not the scheduler's next one.
        values = self.learned.values()
        if self._dots_cache[0] is not values:
            self._dots_cache = (values, {})
        sched_lr = self.last_step_lrs[group_index]
        key = (group_index, dtype, sched_lr)
        if key not in self._dots_cache[1]:
            self._dots_cache[1][key] = self.hparams(self.param_groups[group_index], dtype, lr=sched_lr)
        return self._dots_cache[1][key]

    def hypergradient_rows(self):
        return HypergradientRows(self)

    def hypergradient(self, guide_grads):
        """d L_guide / d value from one guidance gradient per `stepped_params()` entry."""
        pairs = self.stepped_params()
        if len(guide_grads) != len(pairs):
            raise ValueError(f"expected {len(pairs)} guidance gradients, got {len(guide_grads)}")
        rows = self.hypergradient_rows()
        for (gi, p), gg in zip(pairs, guide_grads):
            if gg is not None:
                rows.add(gi, p, gg)
        return rows.total()

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self):
        out = super().state_dict()
        out["guided_hyper"] = self.learned.state_dict()
        out["guided_last_step_lrs"] = list(self.last_step_lrs)
        if self.grouping_record is not None:
            out["guided_grouping"] = self.grouping_record
        return out

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        hyper = state_dict.pop("guided_hyper", None)
        last_lrs = state_dict.pop("guided_last_step_lrs", None)
        # the fairseq shell compares it with this run's grouping before calling here
        state_dict.pop("guided_grouping", None)
        if hyper is None and self.learned.names:  # resuming would restart them silently
            raise LearnedStateError(
                f"the optimizer state has no guided_hyper entry, but this run learns "
                f"{', '.join(self.learned.names)}; resume from a checkpoint of a guided run, or pass "
                f"--reset-optimizer to start the values afresh")
        if hyper is not None:
            self.learned.check_state(hyper)  # before torch's load changes anything
        super().load_state_dict(state_dict)
        if hyper is not None:
            self.learned.load_state_dict(hyper)
        if last_lrs is not None:
            self.last_step_lrs = list(last_lrs)

    # -- per optimizer --------------------------------------------------------------------
    def init_state(self, p, state, group):
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def update_one(self, p, grad, state, group, hp):
        raise NotImplementedError

    def update_many(self, params, grads, states, group, hp):
        """update_one over tensors that share dtype, device and step count; an optimizer
        with foreach kernels overrides it."""
        for p, grad, state in zip(params, grads, states):
            self.update_one(p, grad, state, group, hp)

    def row_one(self, names, guide_grad, p, grad, state, group, hp, disposable=False):
        """One tensor's row of dot products (a 1-D tensor). With `disposable` the caller
        frees guide_grad afterwards, so it may be overwritten."""
        raise NotImplementedError

    def combine_one(self, names, rows, step, group, hp):
        """The hypergradient (list of 0-d float64 tensors, math names) from (N, R) rows."""
        raise NotImplementedError


def advance_steps(states):
    """Count one more step in every state of a batch (they share the count) and return it."""
    step = states[0]["step"] + 1
    for state in states:
        state["step"] = step
    return step
