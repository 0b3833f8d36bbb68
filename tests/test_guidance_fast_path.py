"""The meta step as training runs it (guidance gradients folded into the dot products by
per-parameter hooks as the backward produces them, then freed) gives the hypergradient
that the engine computes from a materialised guidance gradient, on a real fairseq
transformer and guidance batch."""
import pytest
import torch
from fairseq import metrics, options, tasks

import fairseq_guided  # noqa: F401
from fairseq_guided.guidance.passes import token_mean_nll
from conftest import PLUGIN, TINY_MODEL


def build(data, optimizer_flags):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", PLUGIN, "--task", "guided_translation",
                                                *TINY_MODEL, "--max-tokens", "1000", "--lr", "0.01",
                                                *optimizer_flags])
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim import build_optimizer

    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    return task, model, optimizer


@pytest.mark.parametrize("optimizer", ["guided_lamb", "guided_adam", "guided_adafactor"])
def test_streamed_hypergradient_equals_the_materialised_one(tiny_corpus, optimizer):
    extra = ["--beta1", "0.9"] if optimizer == "guided_adafactor" else []
    task, model, fairseq_opt = build(tiny_corpus, ["--optimizer", optimizer, *extra,
                                                   "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0",
                                                   "--guidance-interval", "2", "--guidance-max-tokens", "200"])
    guided = fairseq_opt.guided
    task.load_dataset("train")
    batch = task.dataset("train").collater([task.dataset("train")[i] for i in range(24)])
    for _ in range(2):  # two real steps, so the moments are not trivial
        model.zero_grad()
        loss, _ = token_mean_nll(model, batch, task.target_dictionary.pad())
        loss.backward()
        task.optimizer_step(fairseq_opt, model, update_num=1)  # odd: no meta step here
    with metrics.aggregate(new_root=True) as agg:
        task.optimizer_step(fairseq_opt, model, update_num=0)  # step + meta step (streamed)
    streamed = torch.stack([agg[f"hgrad_{n}"].avg for n in guided.learned.names]).to(torch.float64)

    # the same hypergradient from a materialised guidance gradient
    parts = task.guidance.sample(model, 0, torch.device("cpu"))
    assert len(parts) >= 2  # a random sample of mixed lengths runs as length-sorted parts
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    losses = [token_mean_nll(model, part, task.target_dictionary.pad()) for part in parts]
    loss_sum, ntokens = sum(loss for loss, _ in losses), sum(n for _, n in losses)
    guide_grads = torch.autograd.grad(loss_sum, params)
    model.train()
    materialised = guided.hypergradient(list(guide_grads)) / ntokens
    assert torch.all(streamed != 0)
    torch.testing.assert_close(streamed, materialised.cpu(), rtol=1e-5, atol=1e-9)


def guidance_grads(task, model, parts):
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    losses = [token_mean_nll(model, part, task.target_dictionary.pad()) for part in parts]
    loss_sum, ntokens = sum(loss for loss, _ in losses), sum(n for _, n in losses)
    grads = torch.autograd.grad(loss_sum / ntokens, params)
    model.train()
    return list(grads)


@pytest.mark.parametrize("optimizer,learned", [("guided_adam", "alpha,beta1,beta2,eps,weight_decay"),
                                               ("guided_lamb", "alpha,beta1,beta2,eps,weight_decay"),
                                               ("guided_adam", "alpha")])
def test_foreach_update_equals_the_per_tensor_loop(tiny_corpus, optimizer, learned, device="cpu"):
    """On a real transformer, the foreach kernels (learned values as 0-d device tensors)
    and the per-tensor loop make the same updates and the same hypergradients through four
    updates and meta steps. Both see the same gradients: Adam turns rounding-level
    differences in near-zero gradients into visible ones, so separate trainings would
    drift apart for reasons that have nothing to do with the update path."""
    flags = ["--optimizer", optimizer, "--guided-hparams", learned, "--guided-meta-lr", "0.01",
             "--weight-decay", "0.01"]
    task, model, foreach = build(tiny_corpus, flags)
    _, twin, loop = build(tiny_corpus, flags + ["--guided-per-tensor-loop"])
    task.load_dataset("train")
    data = task.dataset("train")
    pad = task.target_dictionary.pad()
    hypergrads = []
    for update in range(4):
        batch = data.collater([data[i] for i in range(12 * update, 12 * update + 12)])
        model.zero_grad()
        torch.manual_seed(update)  # the same dropout masks in the twin's forward
        token_mean_nll(model, batch, pad)[0].backward()
        for p, q in zip(model.parameters(), twin.parameters()):
            q.grad = p.grad.clone()
        foreach.step()
        loop.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-7)
        # one guidance gradient for both, for the same reason
        guide_grads = guidance_grads(task, model, task.guidance.sample(model, update, torch.device(device)))
        h_foreach = foreach.guided.hypergradient(guide_grads)
        h_loop = loop.guided.hypergradient(guide_grads)
        torch.testing.assert_close(h_foreach, h_loop, rtol=1e-5, atol=1e-9)
        for guided in (foreach.guided, loop.guided):
            guided.learned.meta_step(h_foreach)
        hypergrads.append(h_foreach)
    assert torch.all(torch.stack(hypergrads) != 0)
    assert not torch.equal(foreach.guided.learned.raw, torch.zeros_like(foreach.guided.learned.raw))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the GPU machine)")
@pytest.mark.parametrize("optimizer", ["guided_adam", "guided_lamb", "guided_adafactor"])
@pytest.mark.parametrize("grouped", [False, True], ids=["global", "two-groups"])
def test_no_host_sync_in_the_update_and_meta_step_on_cuda(optimizer, grouped):
    """torch raises on any device-to-host synchronisation while the update, the
    hypergradient dot products and the meta step run (after a first step builds state);
    with per-group values too (--guided-groups)."""
    from fairseq_guided.hypergrad.hyperparams import LearnedHyperParams, MetaAdamConfig
    from fairseq_guided.hypergrad import OPTIMIZERS

    torch.manual_seed(0)
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in [(64, 32), (32,), (16, 64)]]
    learned = LearnedHyperParams(["alpha", "beta1"], {"alpha": 1.0, "beta1": 0.9},
                                 {"alpha": 1.0, "beta1": 1.0}, MetaAdamConfig(lr=1e-3),
                                 groups=["first", "last"] if grouped else None).to("cuda")
    extra = {"beta1": 0.9} if optimizer == "guided_adafactor" else {}
    # the groups keep the tensors' order, so grads[3] lines up with stepped_params()
    param_groups = ([{"params": params[:2], "learned_group": 0}, {"params": params[2:], "learned_group": 1}]
                    if grouped else params)
    opt = OPTIMIZERS[optimizer.split("_")[1]](param_groups, learned, lr=0.01, **extra)
    grads = [[torch.randn_like(p) for p in params] for _ in range(4)]
    previous = torch.cuda.get_sync_debug_mode()
    for i, step_grads in enumerate(grads[:3]):
        for p, g in zip(params, step_grads):
            p.grad = g
        if i >= 1:
            torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
            learned.meta_step(opt.hypergradient(grads[3]))
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    assert torch.isfinite(learned.raw).all()
