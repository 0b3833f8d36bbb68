"""The meta step as training runs it (guidance gradients folded into the dot products by
per-parameter hooks as the backward produces them, then freed) gives the hypergradient
that the engine computes from a materialised guidance gradient, on a real fairseq
transformer and guidance batch."""
import pytest
import torch
from fairseq import metrics, options, tasks

import fairseq_guided  # noqa: F401
from fairseq_guided.guidance import token_mean_nll
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
                                                   "--guidance-interval", "2"])
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
    sample = task.guidance.sample(model, 0, torch.device("cpu"))
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum, ntokens = token_mean_nll(model, sample, task.target_dictionary.pad())
    guide_grads = torch.autograd.grad(loss_sum, params)
    model.train()
    materialised = guided.hypergradient(list(guide_grads)) / ntokens
    assert torch.all(streamed != 0)
    torch.testing.assert_close(streamed, materialised.cpu(), rtol=1e-5, atol=1e-9)
