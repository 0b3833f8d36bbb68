"""With nothing learned, each guided optimizer follows its stock counterpart step for step
(fairseq's adam and adafactor on the CPU), and guided LAMB follows a float64
re-implementation of the LAMB paper's formula. Both are built through fairseq's registry
from the flags a user would give."""
import argparse
import copy

import pytest
import torch
from fairseq.optim import build_optimizer
from fairseq.optim.adafactor import FairseqAdafactor
from omegaconf import OmegaConf

import fairseq_guided  # noqa: F401 (registers the guided optimizers)
from fairseq_guided.hypergrad.reference import lamb_reference

STEPS = 20
# both update paths: foreach kernels over all tensors (default) and fairseq's per-tensor loop
UPDATE_PATHS = pytest.mark.parametrize("per_tensor_loop", [False, True], ids=["foreach", "per-tensor"])


def small_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def batches(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(10, 6, generator=gen), torch.randn(10, 3, generator=gen)) for _ in range(STEPS)]


def fairseq_optimizer(name, params, **flags):
    return build_optimizer(OmegaConf.create({"_name": name, "lr": [0.01], **flags}), params)


def train(model, optimizer, data, lr_schedule=lambda i: 0.01 * (i + 1) / STEPS):
    for i, (x, y) in enumerate(data):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.set_lr(lr_schedule(i))
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@UPDATE_PATHS
def test_guided_adam_learning_nothing_equals_fairseq_adam(per_tensor_loop):
    data = batches()
    flags = dict(adam_betas="(0.85, 0.98)", adam_eps=1e-6, weight_decay=0.01)
    stock_model, guided_model = small_model(), small_model()
    stock = fairseq_optimizer("adam", list(stock_model.parameters()), use_old_adam=True, tpu=False,
                             **flags)
    guided = fairseq_optimizer("guided_adam", list(guided_model.parameters()),
                               guided_per_tensor_loop=per_tensor_loop, **flags)
    assert type(stock._optimizer).__module__ == "fairseq.optim.adam"
    for a, b in zip(train(stock_model, stock, data), train(guided_model, guided, data)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("beta1", [None, 0.9])
def test_guided_adafactor_learning_nothing_equals_fairseq_adafactor(beta1):
    data = batches()
    stock_model, guided_model = small_model(), small_model()
    args = argparse.Namespace(lr=[0.01], adafactor_eps="(1e-30, 1e-3)", clip_threshold=1.0,
                              decay_rate=-0.8, beta1=beta1, weight_decay=0.01,
                              scale_parameter=False, relative_step=False, warmup_init=False)
    stock = FairseqAdafactor(args, list(stock_model.parameters()))
    guided = fairseq_optimizer("guided_adafactor", list(guided_model.parameters()), beta1=beta1,
                               weight_decay=0.01)
    for a, b in zip(train(stock_model, stock, data), train(guided_model, guided, data)):
        assert torch.equal(a, b)


@UPDATE_PATHS
def test_guided_lamb_learning_nothing_follows_the_lamb_formula_in_float64(per_tensor_loop):
    data = [(x.double(), y.double()) for x, y in batches()]
    model = small_model().double()
    ref_params = [p.detach().clone() for p in model.parameters()]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ref_params]
    optimizer = fairseq_optimizer("guided_lamb", list(model.parameters()), lamb_betas="(0.9, 0.99)",
                                  lamb_eps=1e-6, weight_decay=0.01,
                                  guided_per_tensor_loop=per_tensor_loop)
    ref_model = copy.deepcopy(model)
    for i, (x, y) in enumerate(data):
        lr = 0.01 * (i + 1) / STEPS
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.set_lr(lr)
        optimizer.step()
        for p, r in zip(ref_model.parameters(), ref_params):
            p.data.copy_(r)
        ref_model.zero_grad()
        ((ref_model(x) - y) ** 2).mean().backward()
        for j, p in enumerate(ref_model.parameters()):
            new, m, v, _ = lamb_reference(ref_params[j], p.grad, *moments[j], i + 1, lr, 0.9, 0.99, 1e-6, 0.01)
            ref_params[j], moments[j] = new, (m, v)
    for p, r in zip(model.parameters(), ref_params):
        torch.testing.assert_close(p.detach(), r, rtol=1e-10, atol=1e-12)


def test_learned_alpha_scales_the_scheduled_lr_without_replacing_it():
    model = small_model()
    optimizer = fairseq_optimizer("guided_adam", list(model.parameters()), guided_hparams="alpha",
                                  guided_alpha_init=2.0)
    optimizer.set_lr(0.003)
    assert optimizer.get_lr() == 0.003  # fairseq's scheduler sees its own value
    assert abs(float(optimizer.guided.effective_lr()) - 0.006) < 1e-12
