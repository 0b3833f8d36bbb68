"""The guidance runner, the guided task's hooks, the guidance passes and the guidance
batches, in process on a real fairseq task, model and guided optimizer (the fairseq-train
tests run these paths in a subprocess, where a mutation tool cannot see them): which
guidance batch at which update, the held-out meta step's numbers against an independent
float64 recomputation, the loss scale and layouts of fairseq's precision wrappers (as
CPU stand-ins), the reduction over workers, and what is logged through fairseq.metrics."""
import contextlib
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fairseq import metrics
from fairseq.distributed import utils as dist_utils
from fairseq.models import BaseFairseqModel

import fairseq_guided  # noqa: F401
from fairseq_guided import channels
from fairseq_guided.guidance import runner as runner_module
from fairseq_guided.guidance.batches import GuidanceBatches
from fairseq_guided.guidance.passes import (drop_guidance_gradients, fold_guidance_gradients, token_mean_nll,
                                            unwrap_model)
from fairseq_guided.guidance.runner import GuidanceRunner
from fairseq_guided.guidance.task import GuidedTaskMixin
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
from test_guidance_in_process import build, training_batches

CPU = torch.device("cpu")


# -- helpers ------------------------------------------------------------------------------
def meter(agg, key):
    """(last value, count, round, priority) of a logged scalar."""
    priority = {k: p for p, _, k in agg.priorities}[key]
    m = agg[key]
    return m.val, m.count, m.round, priority


def learned_values(names=("alpha", "beta1"), groups=None, lr=1e-2):
    init = {"alpha": 2.0, "beta1": 0.9}
    return LearnedHyperParams(list(names), {n: init[n] for n in names}, {n: 1.0 for n in names},
                              MetaAdamConfig(lr=lr), groups=groups)


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def guidance_gradients(model, parts, pad):
    """float64 sum of the parts' target-token NLLs, their token count and d(sum)/d param
    per trainable parameter, at the current parameters in eval mode, computed here (log
    softmax in float64); the training gradients and the mode are kept."""
    params = trainable(model)
    stash = [p.grad for p in params]
    for p in params:
        p.grad = None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.enable_grad():
        for part in parts:
            logits = model(**part["net_input"])[0]
            lprobs = torch.log_softmax(logits.double(), dim=-1)
            target = part["target"]
            mask = target.ne(pad)
            nll = -(lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask).sum()
            nll.backward()
            total += float(nll)
            count += int(mask.sum())
    grads = [p.grad.clone() for p in params]
    for p, g in zip(params, stash):
        p.grad = g
    model.train(was_training)
    return total, count, grads


class LossScaled:
    """What the guidance code reads of fairseq's fp16/amp wrappers, on the CPU: the guided
    optimizer as fp32_optimizer, the loss scaler's loss_scale, a pending gradient factor;
    step() applies the factor and steps the guided optimizer, or skips the step as --amp
    does on an overflow."""

    def __init__(self, shell, loss_scale=1.0, skip=False, multiply_factor=None, params=()):
        self.fp32_optimizer = shell
        self.params = params
        self.scaler = SimpleNamespace(loss_scale=loss_scale)
        self.skip = skip
        if multiply_factor is not None:
            self._multiply_factor = multiply_factor

    def step(self):
        factor = getattr(self, "_multiply_factor", 1.0)
        if factor != 1.0:
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(factor)
            self._multiply_factor = 1.0
        if not self.skip:
            self.fp32_optimizer.step()


class FlatMaster:
    """fairseq's flat --fp16 layout in fp32 on the CPU: the model's parameters copied into
    one flat master buffer (fp32_params {0: buffer}) that a guided optimizer built on it
    steps; the result is copied back."""

    def __init__(self, shell_type, cfg, params):
        self.fp16_params = params
        flat = torch.nn.Parameter(torch.cat([p.data.reshape(-1) for p in params]))
        flat.grad = torch.zeros_like(flat)
        self.fp32_params = {0: flat}
        self.fp32_optimizer = shell_type(cfg, [flat])

    def step(self):
        flat = self.fp32_params[0]
        flat.grad.copy_(torch.cat([p.grad.reshape(-1) for p in self.fp16_params]))
        self.fp32_optimizer.step()
        offset = 0
        for p in self.fp16_params:
            p.data.copy_(flat.data[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


def spy_dot_rows(monkeypatch, guided):
    """Record what each guidance gradient hands the hypergradient rows."""
    calls = []
    real = guided.dot_row

    def dot_row(group_index, param, guide_grad, grad=None, region=None, disposable=False):
        calls.append(dict(param=param, guide=guide_grad.detach().clone(), grad=grad, region=region,
                          disposable=disposable))
        return real(group_index, param, guide_grad, grad, region, disposable)

    monkeypatch.setattr(guided, "dot_row", dot_row)
    return calls


def one_update(task, model, criterion, shell, optimizer, update, sample):
    """A training step on `sample`, then the task's optimizer_step through `optimizer`,
    under a fresh metrics root (returned)."""
    shell.zero_grad()
    task.train_step(sample, model, criterion, shell, update)
    with metrics.aggregate(new_root=True) as agg:
        task.optimizer_step(optimizer, model, update)
    return agg


def logged_hgrads(agg, names):
    return torch.tensor([float(agg[f"hgrad_{n}"].val) for n in names], dtype=torch.float64)


@pytest.fixture(scope="module")
def step_task(tiny_corpus):
    """One task with --guidance-refresh step, its model and the guide split loaded."""
    task, model, criterion, opt = build(tiny_corpus, "--guided-hparams", "alpha", "--guidance-refresh", "step",
                                        "--guidance-max-tokens", "60")
    task.load_dataset("guide")
    model.eval()
    return task, model


# -- which guidance batch -----------------------------------------------------------------
def test_batch_number_per_refresh_mode():
    """never: batch 0 at any update; epoch: epoch - 1; step: update // interval (an int)."""
    runner = GuidanceRunner(None, SimpleNamespace(guidance_refresh="never", guidance_interval=2))
    assert runner.batch_number(7) == 0 and runner.batch_number(0) == 0
    runner.cfg.guidance_refresh = "epoch"
    runner.set_epoch(4)
    assert runner.batch_number(7) == 3
    runner.cfg.guidance_refresh = "step"
    j = runner.batch_number(7)
    assert j == 3 and isinstance(j, int)


def test_sample_draws_position_j_caches_it_and_logs_the_first(step_task, caplog, monkeypatch):
    """One worker takes position j; the same j comes from the cache; only the first batch is described in the log."""
    task, model = step_task
    monkeypatch.setattr(dist_utils, "get_data_parallel_rank", lambda: pytest.fail("rank read with one worker"))
    runner = GuidanceRunner(task, task.guidance.cfg)
    with caplog.at_level(logging.INFO, logger="fairseq_guided.guidance.batches"):
        parts = runner.sample(model, 3, CPU)
        again = runner.sample(model, 3, CPU)
        other = runner.sample(model, 4, CPU)
    assert again is parts and other is not parts
    expected = runner._batches.at(3)
    assert sorted(i for p in parts for i in p["id"].tolist()) == sorted(expected.tolist())
    assert sorted(i for p in other for i in p["id"].tolist()) == sorted(runner._batches.at(4).tolist())
    records = [r for r in caplog.records if r.name == "fairseq_guided.guidance.batches"]
    assert len(records) == 1
    b = runner._batches
    lengths = task.dataset("guide").num_tokens_vec(expected)
    assert records[0].getMessage() == (
        f"guidance batch: {len(expected)} sentences, {sum(int(p['ntokens']) for p in parts)} target tokens in "
        f"{len(parts)} part(s), lengths {lengths.min()}-{lengths.max()} of the split's "
        f"{b.sizes.min()}-{b.sizes.max()} (100 examples of 'guide'); batching=random, refresh=step, interval=1")


def test_sample_moves_the_parts_to_the_device_asked(step_task):
    """Every tensor of the guidance parts goes to the device given (meta stands in for a GPU)."""
    task, model = step_task
    runner = GuidanceRunner(task, task.guidance.cfg)
    parts = runner.sample(model, 2, torch.device("meta"))
    for part in parts:
        assert part["net_input"]["src_tokens"].device.type == "meta"
        assert part["target"].device.type == "meta" and part["id"].device.type == "meta"


# -- the reduction over workers -------------------------------------------------------------
def test_token_mean_with_one_worker_is_the_local_sum_over_tokens(monkeypatch):
    """One worker: exactly sum / tokens (>= 1) in float64, no all-reduce, guide_loss in bits (round 3, priority 810)."""
    monkeypatch.setattr(dist_utils, "all_reduce", lambda *a, **k: pytest.fail("all_reduce with one worker"))
    guided = SimpleNamespace(learned=learned_values())
    hsum = torch.tensor([3.0, -1.5], dtype=torch.float64)
    with metrics.aggregate(new_root=True) as agg:
        out = GuidanceRunner._token_mean_over_workers(guided, hsum, torch.tensor(7.25), torch.tensor(5))
    assert out.dtype == torch.float64 and out.shape == (2,)
    assert torch.equal(out, hsum / 5)
    value, count, rnd, priority = meter(agg, "guide_loss")
    assert float(value) == pytest.approx(7.25 / 5 / math.log(2), rel=1e-12)
    assert (count, rnd, priority) == (1, 3, 810)
    with metrics.aggregate(new_root=True) as agg:
        out = GuidanceRunner._token_mean_over_workers(guided, hsum, torch.tensor(2.0), torch.tensor(1))
    assert torch.equal(out, hsum) and float(agg["guide_loss"].val) == pytest.approx(2 / math.log(2), rel=1e-12)
    with metrics.aggregate(new_root=True):
        out = GuidanceRunner._token_mean_over_workers(guided, hsum, torch.tensor(0.0), torch.tensor(0))
    assert torch.equal(out, hsum)  # no tokens: divided by 1


def test_token_mean_gathers_the_loss_and_count_on_the_learned_values_device():
    """The loss and token count join the hypergradient on the learned values' device (meta stands in for a GPU)."""
    learned = learned_values()
    learned.to(torch.device("meta"))
    guided = SimpleNamespace(learned=learned)
    with metrics.aggregate(new_root=True):
        out = GuidanceRunner._token_mean_over_workers(guided, torch.zeros(2, dtype=torch.float64, device="meta"),
                                                      torch.tensor(3.0), torch.tensor(4))
    assert out.device.type == "meta" and out.dtype == torch.float64 and out.shape == (2,)


def test_apply_logs_each_hypergradient_and_the_counts_then_steps():
    """hgrad_<name> (round 6, priority 830), then the non-finite / skipped counts (weight 0, round 0, 840 / 841)."""
    runner = GuidanceRunner(None, None)
    guided = SimpleNamespace(learned=learned_values(lr=1e4))
    hypergrad = torch.tensor([1.0, float("inf")], dtype=torch.float64)
    with metrics.aggregate(new_root=True) as agg:
        runner._apply(guided, hypergrad)
    assert guided.learned.nonfinite_count.tolist() == [0, 1] and guided.learned.skipped_count.tolist() == [1, 0]
    value, count, rnd, priority = meter(agg, "hgrad_alpha")
    assert float(value) == 1.0 and (count, rnd, priority) == (1, 6, 830)
    value, count, rnd, priority = meter(agg, "hgrad_beta1")
    assert float(value) == float("inf") and (count, rnd, priority) == (1, 6, 830)
    value, count, rnd, priority = meter(agg, "hgrad_nonfinite")
    assert float(value) == 1 and (count, rnd, priority) == (0, 0, 840)
    value, count, rnd, priority = meter(agg, "meta_skipped")
    assert float(value) == 1 and (count, rnd, priority) == (0, 0, 841)


def test_apply_and_log_values_name_each_group():
    """Per-group values are logged as hgrad_<name>/<group> and guided_<name>/<group>, each its table entry."""
    runner = GuidanceRunner(None, None)
    guided = SimpleNamespace(learned=learned_values(groups=["enc", "dec"], lr=0.0))
    table = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    with metrics.aggregate(new_root=True) as agg:
        runner._apply(guided, table)
        runner._log_values(guided)
    values = guided.learned.values()
    for g, group in enumerate(["enc", "dec"]):
        for k, name in enumerate(["alpha", "beta1"]):
            assert float(agg[f"hgrad_{name}/{group}"].val) == float(table[g, k])
            assert float(agg[f"guided_{name}/{group}"].val) == float(values[g, k])


def test_log_values_logs_each_learned_value_as_its_latest():
    """guided_<name>: the current value, weight 0 (the latest, not an average), round 6, priority 820."""
    runner = GuidanceRunner(None, None)
    guided = SimpleNamespace(learned=learned_values())
    with metrics.aggregate(new_root=True) as agg:
        runner._log_values(guided)
        guided.learned.set_value("alpha", 3.0)
        runner._log_values(guided)
    value, count, rnd, priority = meter(agg, "guided_alpha")
    assert float(value) == pytest.approx(3.0, rel=1e-12) and (count, rnd, priority) == (0, 6, 820)
    value, count, rnd, priority = meter(agg, "guided_beta1")
    assert float(value) == pytest.approx(0.9, rel=1e-12) and (count, rnd, priority) == (0, 6, 820)
    assert agg.get_smoothed_value("guided_alpha") == pytest.approx(3.0, rel=1e-12)


# -- the held-out meta step ---------------------------------------------------------------
@pytest.mark.parametrize("time_pass,max_tokens", [(False, "60"), (True, "2000")])
def test_heldout_meta_step_matches_a_float64_recomputation(tiny_corpus, monkeypatch, time_pass, max_tokens):
    """Loss scale 8: rows get 8 x the sample's NLL gradient once each; hgrad and guide_loss match a recomputation."""
    flags = ("--guidance-time-pass",) if time_pass else ()
    task, model, criterion, shell = build(tiny_corpus, "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0",
                                          "--guidance-refresh", "step", "--guidance-max-tokens", max_tokens, *flags)
    guided = shell.guided
    wrapper = LossScaled(shell, loss_scale=8.0)
    autocast_args, drop_scales = [], []
    monkeypatch.setattr(runner_module, "guidance_autocast",
                        lambda opt: autocast_args.append(opt) or contextlib.nullcontext())
    real_drop = runner_module.drop_guidance_gradients

    def drop(model, parts, params, scale, autocast, pad):
        drop_scales.append(scale)
        return real_drop(model, parts, params, scale, autocast, pad)

    monkeypatch.setattr(runner_module, "drop_guidance_gradients", drop)
    calls = spy_dot_rows(monkeypatch, guided)
    first, sample = training_batches(task, 2)
    one_update(task, model, criterion, shell, shell, 1, first)  # a second step makes beta1 matter
    calls.clear(), autocast_args.clear(), drop_scales.clear()
    agg = one_update(task, model, criterion, shell, wrapper, 2, sample)
    rows_calls = list(calls)
    parts = task.guidance.sample(model, 2, CPU)
    assert (len(parts) == 1) == (max_tokens == "2000")
    total, count, grads = guidance_gradients(model, parts, task.target_dictionary.pad())
    params = trainable(model)
    largest = max(float(8 * g.abs().max()) for g in grads)
    order = {id(p): i for i, p in enumerate(params)}
    assert sorted(order[id(c["param"])] for c in rows_calls) == list(range(len(params)))  # each tensor once
    for c in rows_calls:
        i = order[id(c["param"])]
        p, g = params[i], grads[i]
        torch.testing.assert_close(c["guide"], 8 * g, rtol=1e-3, atol=1e-5 * largest)
        assert c["disposable"] is True and c["region"] is None and c["grad"] is p.grad
    expected = guided.hypergradient(grads) / count
    assert torch.all(expected != 0)
    torch.testing.assert_close(logged_hgrads(agg, ["alpha", "beta1"]), expected, rtol=1e-4, atol=0)
    assert float(agg["guide_loss"].val) == pytest.approx(total / count / math.log(2), rel=1e-5)
    assert autocast_args and all(a is wrapper for a in autocast_args)
    assert drop_scales == ([8.0] if time_pass else [])
    assert ("guide_pass_ms" in agg) == time_pass
    assert guided.learned.steps.tolist() == [2.0, 2.0]


def test_the_timed_pass_draws_its_own_batch_and_backpropagates_the_scaled_loss(step_task):
    """The timed pass alone draws its batch, backpropagates loss x the loss scale, drops it, logs guide_pass_ms."""
    task, model = step_task
    runner = GuidanceRunner(task, task.guidance.cfg)
    params = trainable(model)
    seen = []
    handle = params[-1].register_post_accumulate_grad_hook(lambda q: seen.append(q.grad.clone()))
    try:
        with metrics.aggregate(new_root=True) as agg:
            runner._time_guidance_pass(LossScaled(None, loss_scale=2.0), model, 1)
    finally:
        handle.remove()
    parts = runner.sample(model, 1, CPU)
    _, _, grads = guidance_gradients(model, parts, task.target_dictionary.pad())
    assert len(seen) == len(parts) and agg["guide_pass_ms"].val > 0
    torch.testing.assert_close(sum(seen), 2 * grads[-1], rtol=1e-4, atol=1e-5 * float(2 * grads[-1].abs().max()))
    assert all(p.grad is None for p in params)


def test_meta_steps_only_every_interval_and_not_after_a_skipped_step(tiny_corpus):
    """Interval 2: meta steps at updates 0 and 2 only; a skipped (--amp) step logs guided_skipped, no meta step."""
    task, model, criterion, shell = build(tiny_corpus, "--guided-hparams", "alpha", "--guided-meta-lr", "0.01",
                                          "--guidance-interval", "2", "--guidance-max-tokens", "2000")
    guided = shell.guided
    batches = training_batches(task, 4)
    steps = []
    for update in range(3):
        agg = one_update(task, model, criterion, shell, shell, update, batches[update])
        steps.append(guided.learned.steps.tolist())
        assert ("hgrad_alpha" in agg) == (update != 1) and "guided_alpha" in agg
        assert "guided_skipped" not in agg
    assert steps == [[1.0], [1.0], [2.0]]
    assert guided.keep_step_grad is False  # held-out guidance keeps no gradient copy
    before = guided.learned.raw.clone()
    agg = one_update(task, model, criterion, shell, LossScaled(shell, skip=True), 4, batches[3])
    assert "hgrad_alpha" not in agg and torch.equal(guided.learned.raw, before)
    value, count, rnd, priority = meter(agg, "guided_skipped")
    assert value == 1 and (count, rnd, priority) == (0, None, 845)
    assert float(agg["guided_alpha"].val) == float(guided.learned.values()[0])


def test_heldout_meta_step_names_what_it_cannot_do(tiny_corpus, monkeypatch):
    """No stepped tensor: named with the optimizer's class; a part out of memory: its tokens, 1-based update."""
    task, model, criterion, shell = build(tiny_corpus, "--guided-hparams", "alpha", "--guidance-refresh", "step",
                                          "--guidance-max-tokens", "200")
    runner = task.guidance
    with pytest.raises(RuntimeError) as info:
        runner._heldout_meta_step(shell, shell, model, 0)
    assert str(info.value) == ("cannot find the tensors the guided optimizer updated for this model under "
                               "GuidedFairseqAdam")
    shell.zero_grad()
    task.train_step(training_batches(task, 1)[0], model, criterion, shell, 0)
    shell.step()
    oom = torch.OutOfMemoryError("out of memory")

    def fold(*args, **kwargs):
        raise oom

    monkeypatch.setattr(runner_module, "fold_guidance_gradients", fold)
    with pytest.raises(RuntimeError) as info:
        runner._heldout_meta_step(shell, shell, model, 4)
    parts = runner.sample(model, 4, CPU)
    assert len(parts) > 1
    biggest = max(int(p["ntokens"]) for p in parts)
    assert str(info.value) == (f"a part of the guidance batch ({biggest} target tokens) does not fit in memory "
                               f"at update 5: lower --guidance-max-tokens / --guidance-batch-size")
    assert info.value.__cause__ is oom


@pytest.mark.parametrize("optimizer", ["guided_adam", "guided_lamb"])
def test_heldout_meta_step_under_a_flat_fp32_master(tiny_corpus, monkeypatch, optimizer):
    """Flat --fp16: gradients go to the buffer's regions (adam) or views (lamb); hgrad matches a recomputation."""
    task, model, criterion, plain = build(tiny_corpus, "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0",
                                          "--guidance-max-tokens", "200", optimizer=optimizer)
    params = trainable(model)
    stub = FlatMaster(type(plain), plain.cfg, params)
    shell = stub.fp32_optimizer
    guided = shell.guided
    assert (shell.flat_views is None) == (optimizer == "guided_adam")
    calls = spy_dot_rows(monkeypatch, guided)
    for update, sample in enumerate(training_batches(task, 2)):  # a second step makes beta1 matter
        calls.clear()
        model.zero_grad()
        task.train_step(sample, model, criterion, plain, update)
        with metrics.aggregate(new_root=True) as agg:
            task.optimizer_step(stub, model, update)
    rows_calls = list(calls)
    parts = task.guidance.sample(model, 1, CPU)
    _, count, grads = guidance_gradients(model, parts, task.target_dictionary.pad())
    if shell.flat_views is None:
        flat = stub.fp32_params[0]
        assert all(c["param"] is flat for c in rows_calls) and len(rows_calls) == len(params)
        offsets = np.cumsum([0] + [p.numel() for p in params])
        assert sorted((c["region"].start, c["region"].stop) for c in rows_calls) == [
            (int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        expected = guided.hypergradient([torch.cat([g.reshape(-1) for g in grads])]) / count
    else:
        views = {id(v) for v in shell.flat_views}
        assert len(rows_calls) == len(views) and {id(c["param"]) for c in rows_calls} == views
        assert all(c["region"] is None for c in rows_calls)
        expected = guided.hypergradient(grads) / count
    assert torch.all(expected != 0)
    torch.testing.assert_close(logged_hgrads(agg, ["alpha", "beta1"]), expected, rtol=1e-4, atol=0)


def test_bind_checks_a_flat_layout_once_and_names_the_wrapper(tiny_corpus):
    """A flat layout other than the recorded one is refused naming the wrapper; a bound one is not rechecked."""
    task, model, _, plain = build(tiny_corpus, "--guided-hparams", "alpha", optimizer="guided_lamb")
    params = trainable(model)
    stub = FlatMaster(type(plain), plain.cfg, params)
    runner = GuidanceRunner(task, task.guidance.cfg)
    shell = runner.bind(stub)
    assert shell is stub.fp32_optimizer and shell.flat_views is not None
    stub.fp16_params = [torch.nn.Parameter(torch.zeros(p.shape[::-1])) for p in params]
    assert runner.bind(stub) is shell
    fresh = GuidanceRunner(task, task.guidance.cfg)
    with pytest.raises(RuntimeError) as info:
        fresh.bind(stub)
    assert str(info.value) == (f"--fp16 (flat): FlatMaster was built for {len(params)} parameter tensors as the "
                               f"guided task recorded them, but fairseq flattened {len(params)} of other shapes; "
                               f"pass --fp16-no-flatten-grads")


# -- train-batch guidance ---------------------------------------------------------------------
def test_train_batch_meta_step_applies_the_pending_factor_and_skips_missing_gradients(tiny_corpus):
    """Train-batch guidance: next gradient x the pending factor; a tensor without a gradient is left out."""
    task, model, criterion, shell = build(tiny_corpus, "--guidance-source", "train", "--guided-hparams",
                                          "alpha,beta1", "--guided-meta-lr", "0")
    guided = shell.guided
    params = trainable(model)
    batches = training_batches(task, 2)
    one_update(task, model, criterion, shell, LossScaled(shell), 0, batches[0])
    shell.zero_grad()
    task.train_step(batches[1], model, criterion, shell, 1)
    params[0].grad = None
    expected = guided.hypergradient([None] + [p.grad.clone() for p in params[1:]]) * 0.5
    assert torch.all(expected != 0)
    with metrics.aggregate(new_root=True) as agg:
        task.optimizer_step(LossScaled(shell, multiply_factor=0.5, params=params), model, 1)
    torch.testing.assert_close(logged_hgrads(agg, ["alpha", "beta1"]), expected, rtol=1e-9, atol=0)


# -- the task's hooks ---------------------------------------------------------------------------
class _Recorder:
    """The stock task's hooks, recording what the guided mixin forwards."""

    def __init__(self):
        self.calls = []

    def build_criterion(self, cfg, from_checkpoint=False):
        self.calls.append(("build_criterion", cfg, from_checkpoint))
        return torch.nn.Linear(2, 3)

    def begin_epoch(self, epoch, model):
        self.calls.append(("begin_epoch", epoch, model))

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self.calls.append(("train_step", sample, model, criterion, optimizer, update_num, ignore_grad))
        return "stepped"


class _Probe(GuidedTaskMixin, _Recorder):
    pass


def test_the_task_hooks_forward_every_argument(monkeypatch):
    """build_criterion, begin_epoch and train_step pass every argument on (the epoch to the runner, bind first)."""
    monkeypatch.setattr(channels, "_layout", dict(channels._layout))  # the probe's criterion is no real one
    probe = _Probe()
    bound = []
    probe.guidance = SimpleNamespace(bind=bound.append, set_epoch=lambda e: bound.append(("epoch", e)))
    cfg, model = object(), object()
    probe.build_criterion(cfg)
    probe.build_criterion(cfg, True)
    probe.begin_epoch(3, model)
    assert probe.train_step("s", model, "c", "o", 5, True) == "stepped"
    assert probe.train_step("s", model, "c", "o", 6) == "stepped"
    assert probe.calls == [("build_criterion", cfg, False), ("build_criterion", cfg, True),
                           ("begin_epoch", 3, model), ("train_step", "s", model, "c", "o", 5, True),
                           ("train_step", "s", model, "c", "o", 6, False)]
    assert bound == [("epoch", 3), "o", "o"]


# -- the guidance passes ---------------------------------------------------------------------
class _Tiny(BaseFairseqModel):
    def __init__(self):
        super().__init__()
        self.module = torch.nn.Linear(2, 2)  # a fairseq model may own a child named module


def test_unwrap_model_takes_off_the_wrappers_only():
    """Nested DataParallel wrappers come off; a fairseq model with a child named module stays itself."""
    inner = _Tiny()
    assert unwrap_model(inner) is inner
    assert unwrap_model(torch.nn.DataParallel(inner)) is inner
    assert unwrap_model(torch.nn.DataParallel(torch.nn.DataParallel(inner))) is inner
    plain = torch.nn.Linear(2, 2)
    assert unwrap_model(plain) is plain


def test_token_mean_nll_is_the_summed_nll_of_the_unpadded_targets(step_task):
    """Summed NLL of the non-padding targets and their count, against a float64 hand computation on a padded batch."""
    task, model = step_task
    dataset = task.dataset("guide")
    batch = dataset.collater([dataset[i] for i in range(12)])
    pad = task.target_dictionary.pad()
    assert int(batch["target"].eq(pad).sum()) > 0
    with torch.no_grad():
        loss, count = token_mean_nll(model, batch, pad)
        lprobs = torch.log_softmax(model(**batch["net_input"])[0].double(), dim=-1)
    mask = batch["target"].ne(pad)
    expected = -(lprobs.gather(-1, batch["target"].unsqueeze(-1)).squeeze(-1) * mask).sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert int(count) == int(mask.sum())


class _TargetsFromOutput(torch.nn.Module):
    """A model whose targets come out of its forward (fairseq's get_targets(sample, net_output))."""

    def forward(self, logits):
        return logits, {"target": torch.tensor([[2, 0, 1]])}

    def get_normalized_probs(self, net_output, log_probs):
        return torch.log_softmax(net_output[0], -1) if log_probs else torch.softmax(net_output[0], -1)

    def get_targets(self, sample, net_output):
        return net_output[1]["target"]


def test_token_mean_nll_takes_the_targets_the_model_derives_from_its_output():
    """get_targets sees the forward's output; padding index 1 is ignored."""
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    loss, count = token_mean_nll(_TargetsFromOutput(), {"net_input": {"logits": logits}}, 1)
    lp = torch.log_softmax(logits.double(), -1)[0]
    assert float(loss) == pytest.approx(float(-(lp[0, 2] + lp[1, 0])), rel=1e-6) and int(count) == 2


def test_fold_sums_the_parts_and_lets_a_failing_part_raise_as_itself(step_task):
    """Several parts' losses and tokens add up; an error in an early part propagates as itself, training grads back."""
    task, model = step_task
    runner = GuidanceRunner(task, task.guidance.cfg)
    parts = runner.sample(model, 0, CPU)
    assert len(parts) > 1
    pad = task.target_dictionary.pad()
    params = trainable(model)
    for p in params:
        p.grad = torch.ones_like(p)
    loss, count = fold_guidance_gradients(model, parts, params, {}, None, 1.0, contextlib.nullcontext(), pad)
    total, expected_count, _ = guidance_gradients(model, parts, pad)
    assert float(loss) == pytest.approx(total, rel=1e-5) and int(count) == expected_count
    with pytest.raises(KeyError, match="net_input"):
        fold_guidance_gradients(model, [{}] + parts, params, {}, None, 1.0, contextlib.nullcontext(), pad)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params)
    for p in params:
        p.grad = None


def test_drop_scales_the_loss_and_lets_a_hook_error_raise_as_itself(step_task):
    """The dropped pass backpropagates loss x scale; a tensor that cannot take the hook raises torch's own error."""
    task, model = step_task
    runner = GuidanceRunner(task, task.guidance.cfg)
    parts = runner.sample(model, 1, CPU)[:1]
    pad = task.target_dictionary.pad()
    params = trainable(model)
    seen = {1.0: [], 4.0: []}
    for scale in seen:
        handles = [p.register_post_accumulate_grad_hook(lambda q, s=scale: seen[s].append(q.grad.clone()))
                   for p in params[:3]]
        drop_guidance_gradients(model, parts, params, scale, contextlib.nullcontext(), pad)
        for h in handles:
            h.remove()
    assert len(seen[1.0]) == 3 and all(p.grad is None for p in params)
    for a, b in zip(seen[1.0], seen[4.0]):
        torch.testing.assert_close(b, 4 * a, rtol=1e-5, atol=1e-8)
    frozen = torch.zeros(2)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        drop_guidance_gradients(model, parts, params + [frozen], 1.0, contextlib.nullcontext(), pad)


# -- the guidance batches ---------------------------------------------------------------------
def _batches_cfg(**overrides):
    cfg = dict(guidance_subset="guide", guidance_max_tokens=None, guidance_batch_size=None, train_max_tokens=1000,
               train_batch_size=None, guidance_batching="random", seed=1, guidance_refresh="never",
               guidance_interval=1)
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


def test_parts_are_stable_length_sorted_and_capped_in_sentences(step_task):
    """random: stable length-sorted parts of <= --guidance-batch-size sentences; bucketed: as given, one part."""
    task, model = step_task
    batches = GuidanceBatches(task, _batches_cfg(guidance_max_tokens=2000), model)
    indices = np.arange(100, dtype=np.int64)[::-1].copy()
    sizes = batches.dataset.num_tokens_vec(indices)
    (part,) = batches.parts(indices)
    assert np.array_equal(part, indices[np.argsort(sizes, kind="stable")])
    capped = GuidanceBatches(task, _batches_cfg(guidance_max_tokens=2000, guidance_batch_size=7), model)
    parts = capped.parts(indices)
    assert [len(p) for p in parts] == [7] * 14 + [2]
    assert np.array_equal(np.concatenate(parts), part)
    bucketed = GuidanceBatches(task, _batches_cfg(guidance_max_tokens=200, guidance_batching="bucketed"), model)
    assert [p.tolist() for p in bucketed.parts(indices[:20])] == [indices[:20].tolist()]
