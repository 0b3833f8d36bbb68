"""The task's guidance hooks in process, on a real fairseq task, model, criterion and
guided optimizer (the fairseq-train tests run the same paths in a subprocess, where a
mutation tool cannot see them): train-batch guidance, the timed guidance pass, the epoch's
guidance batch, the recorded parameter layout, the flat-layout check, the effective lrs
and the optimizer's own checkpoint entries."""
import pytest
import torch
from fairseq import metrics, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim import build_optimizer

import fairseq_guided  # noqa: F401
from fairseq_guided import channels
from fairseq_guided.guidance.precision import check_views_match
from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, LearnedStateError, MetaAdamConfig
from fairseq_guided.hypergrad import OPTIMIZERS
from conftest import PLUGIN, TINY_MODEL


def build(data, *flags, optimizer="guided_adam"):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", PLUGIN, "--task", "guided_translation",
                                                *TINY_MODEL, "--max-tokens", "1000", "--lr", "0.01",
                                                "--optimizer", optimizer, *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    fairseq_opt = build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    task.load_dataset("train")
    return task, model, criterion, fairseq_opt


def training_batches(task, count, size=16):
    dataset = task.dataset("train")
    return [dataset.collater([dataset[i] for i in range(k * size, (k + 1) * size)]) for k in range(count)]


def logged(agg, keys):
    return torch.stack([torch.as_tensor(agg[k].avg, dtype=torch.float64) for k in keys])


def test_train_batch_guidance_differentiates_the_previous_update_with_the_next_gradient(tiny_corpus):
    task, model, criterion, fairseq_opt = build(tiny_corpus, "--guidance-source", "train",
                                                "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0")
    guided = fairseq_opt.guided
    params = [p for p in model.parameters() if p.requires_grad]
    for update, sample in enumerate(training_batches(task, 3)):
        fairseq_opt.zero_grad()
        task.train_step(sample, model, criterion, fairseq_opt, update)
        assert guided.keep_step_grad  # set by the task: fairseq builds the optimizer without it
        expected = guided.hypergradient([p.grad.clone() for p in params]) if update else None
        grads = [p.grad.clone() for p in params]
        with metrics.aggregate(new_root=True) as agg:
            task.optimizer_step(fairseq_opt, model, update)
        if update == 0:  # no earlier update to differentiate
            assert "hgrad_alpha" not in agg
        else:
            assert torch.all(expected != 0)
            torch.testing.assert_close(logged(agg, ["hgrad_alpha", "hgrad_beta1"]), expected.to(torch.float64),
                                       rtol=1e-6, atol=0)
        assert logged(agg, ["guided_alpha", "guided_beta1"]).tolist() == pytest.approx([1.0, 0.9])
        for p, g in zip(params, grads):  # each step keeps the gradient it used, for the next
            assert torch.equal(guided.state[p]["step_grad"], g)


def test_a_stock_optimizer_is_refused_at_the_first_train_step(tiny_corpus):
    task, model, criterion, fairseq_opt = build(tiny_corpus, optimizer="adam")
    with pytest.raises(ValueError, match=r"^--task guided_\*: --optimizer FairseqAdam learns nothing"):
        task.train_step(training_batches(task, 1)[0], model, criterion, fairseq_opt, 0)


def _run_heldout(data, *flags):
    task, model, criterion, fairseq_opt = build(data, "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0.01",
                                                "--guidance-max-tokens", "200", *flags)
    params = [p for p in model.parameters() if p.requires_grad]
    aggs, restored = [], True
    for update, sample in enumerate(training_batches(task, 2)):
        fairseq_opt.zero_grad()
        task.train_step(sample, model, criterion, fairseq_opt, update)
        grads = [p.grad.clone() for p in params]
        with metrics.aggregate(new_root=True) as agg:
            task.optimizer_step(fairseq_opt, model, update)
        aggs.append(agg)
        # the guidance passes set the training gradients aside and give them back, in train mode
        restored &= all(torch.equal(p.grad, g) for p, g in zip(params, grads)) and model.training
    return fairseq_opt.guided, aggs, restored


def test_the_timed_guidance_pass_is_logged_and_changes_nothing(tiny_corpus):
    plain, plain_aggs, plain_restored = _run_heldout(tiny_corpus)
    timed, timed_aggs, timed_restored = _run_heldout(tiny_corpus, "--guidance-time-pass")
    assert plain_restored and timed_restored
    assert torch.equal(plain.learned.raw, timed.learned.raw) and torch.all(plain.learned.steps == 2)
    for agg in timed_aggs:
        assert agg["guide_meta_ms"].avg > 0 and agg["guide_pass_ms"].avg > 0
    assert all("guide_pass_ms" not in agg and "guide_meta_ms" not in agg for agg in plain_aggs)
    for a, b in zip(plain_aggs, timed_aggs):
        assert float(a["guide_loss"].avg) == float(b["guide_loss"].avg)


def test_each_epoch_draws_its_own_guidance_batch_with_refresh_epoch(tiny_corpus):
    task, model, _, _ = build(tiny_corpus, "--guided-hparams", "beta1", "--guidance-refresh", "epoch",
                              "--guidance-max-tokens", "200")

    def sample_ids(epoch):
        task.begin_epoch(epoch, model)
        assert task.guidance.batch_number(update_num=7) == epoch - 1
        return sorted(i for part in task.guidance.sample(model, 7, torch.device("cpu")) for i in part["id"].tolist())

    first, second = sample_ids(1), sample_ids(2)
    assert first != second
    assert sample_ids(1) == first  # a function of the epoch, not of the calls before


def test_the_criterion_built_last_replaces_the_recorded_criterion_layout(tiny_corpus):
    channels.record_layout("criterion", torch.nn.Linear(3, 2))  # as if an earlier run had one
    task, model, _, _ = build(tiny_corpus)
    shapes, names = channels.recorded_layout()
    expected = [(n, p.shape) for n, p in model.named_parameters() if p.requires_grad]
    assert names == [n for n, _ in expected] and shapes == [s for _, s in expected]
    channels.record_layout("criterion", torch.nn.Linear(3, 2))
    assert channels.recorded_layout()[1][-2:] == ["criterion.weight", "criterion.bias"]


def test_a_flat_layout_other_than_the_recorded_one_is_refused():
    views = [torch.zeros(2, 3), torch.zeros(4)]
    check_views_match(views, [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4)),
                              torch.nn.Parameter(torch.zeros(5), requires_grad=False)], "FP16Optimizer")
    with pytest.raises(RuntimeError, match=r"^--fp16 \(flat\): FP16Optimizer was built for 2 parameter tensors "
                                           r"as the guided task recorded them, but fairseq flattened 2 of other "
                                           r"shapes; pass --fp16-no-flatten-grads$"):
        check_views_match(views, [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))],
                          "FP16Optimizer")


def _adam(groups=None, lrs=(0.1,), names=("alpha",)):
    learned = LearnedHyperParams(list(names), {"alpha": 2.0, "beta1": 0.9}, {"alpha": 1.0, "beta1": 1.0},
                                 MetaAdamConfig(lr=1e-2), groups=groups)
    tensors = [torch.nn.Parameter(torch.full((3,), float(i + 1), dtype=torch.float64)) for i in range(len(lrs))]
    param_groups = [dict(params=[t], lr=lr, **({} if groups is None else {"learned_group": i}))
                    for i, (t, lr) in enumerate(zip(tensors, lrs))]
    return OPTIMIZERS["adam"](param_groups, learned), tensors


def test_effective_lr_is_alpha_times_the_scheduled_lr_per_group():
    optimizer, _ = _adam()
    assert float(optimizer.effective_lr()) == pytest.approx(0.2, rel=1e-12)
    assert optimizer.effective_lrs() == {}  # global values: no per-group lrs
    grouped, _ = _adam(groups=["enc", "dec"], lrs=(0.1, 0.3))
    grouped.learned.set_value("alpha", 0.5, group=1)
    lrs = grouped.effective_lrs()
    assert list(lrs) == [0, 1]
    assert [float(v) for v in lrs.values()] == pytest.approx([0.2, 0.15], rel=1e-12)
    assert float(grouped.effective_lr()) == pytest.approx(0.2, rel=1e-12)  # the first group's
    unlearned, _ = _adam(names=("beta1",))
    assert unlearned.effective_lr() == 0.1


def test_the_optimizer_checkpoint_keeps_the_last_step_lrs_and_refuses_a_stock_state():
    a, tensors = _adam(lrs=(0.1,))
    tensors[0].grad = torch.ones(3, dtype=torch.float64)
    a.step()
    a.param_groups[0]["lr"] = 0.05  # the scheduler moves on after the step
    state = a.state_dict()
    assert state["guided_last_step_lrs"] == [0.1]
    b, _ = _adam(lrs=(0.7,))
    b.load_state_dict(state)
    assert b.last_step_lrs == [0.1] and b.learned.names == ["alpha"]
    assert "guided_grouping" not in b.state_dict()
    stock = {k: v for k, v in state.items() if not k.startswith("guided_")}
    c, _ = _adam()
    with pytest.raises(LearnedStateError, match=r"^the optimizer state has no guided_hyper entry, but this run "
                                                r"learns alpha; resume from a checkpoint of a guided run"):
        c.load_state_dict(stock)
    nothing, _ = _adam(names=())
    nothing.load_state_dict(stock)  # nothing learned: a stock state is a whole state
    assert nothing.param_groups[0]["lr"] == 0.05


def test_a_stock_state_names_every_learned_value():
    a, _ = _adam(names=("alpha", "beta1"))
    stock = {k: v for k, v in a.state_dict().items() if not k.startswith("guided_")}
    b, _ = _adam(names=("alpha", "beta1"))
    with pytest.raises(LearnedStateError, match=r"but this run learns alpha, beta1; resume from"):
        b.load_state_dict(stock)


@pytest.mark.parametrize("name", ["adam", "lamb", "adafactor"])
def test_the_hypergradient_leaves_the_guidance_gradients_as_given(name):
    """Only the streamed meta step, which frees each guidance gradient after use, may let
    the math overwrite it; a caller's tensors stay as they were."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)]
    names = list(OPTIMIZERS[name].learnable())
    init = {"alpha": 1.0, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": 0.01}
    learned = LearnedHyperParams(names, {n: init[n] for n in names}, {n: 1.0 for n in names}, MetaAdamConfig())
    extra = dict(beta1=0.8) if name == "adafactor" else {}
    optimizer = OPTIMIZERS[name](params, learned, lr=0.01, **extra)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        optimizer.step()
    assert all("step_grad" not in optimizer.state[p] for p in params)  # kept only when asked
    guide = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    copies = [g.clone() for g in guide]
    optimizer.hypergradient(guide)
    assert all(torch.equal(g, c) for g, c in zip(guide, copies))


def test_guided_adam_with_its_defaults_steps_as_torch_adam_with_its_defaults():
    gen = torch.Generator().manual_seed(1)
    ours = [torch.randn(5, generator=gen, dtype=torch.float64)]
    stock = [ours[0].clone()]
    learned = LearnedHyperParams([], {}, {}, MetaAdamConfig())
    guided, adam = OPTIMIZERS["adam"](ours, learned), torch.optim.Adam(stock)
    for _ in range(3):
        g = torch.randn(5, generator=gen, dtype=torch.float64)
        ours[0].grad, stock[0].grad = g.clone(), g.clone()
        guided.step()
        adam.step()
    torch.testing.assert_close(ours[0], stock[0], rtol=1e-6, atol=1e-9)  # the same formula, ordered differently


def test_the_lamb_and_adafactor_defaults_are_the_papers():
    import inspect

    lamb = inspect.signature(OPTIMIZERS["lamb"].__init__).parameters
    assert {k: lamb[k].default for k in ("lr", "beta1", "beta2", "eps", "weight_decay")} == dict(
        lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0)  # You et al. (2020)
    from fairseq.optim.adafactor import Adafactor

    stock = inspect.signature(Adafactor.__init__).parameters
    ours = inspect.signature(OPTIMIZERS["adafactor"].__init__).parameters
    assert (ours["eps1"].default, ours["eps2"].default) == stock["eps"].default
    for key in ("clip_threshold", "decay_rate", "beta1", "weight_decay"):
        assert ours[key].default == stock[key].default, key
    # fairseq-train passes an explicit lr and --scale-parameter (off unless given); ours keep that
    assert ours["lr"].default == 1e-3 and ours["scale_parameter"].default is False
