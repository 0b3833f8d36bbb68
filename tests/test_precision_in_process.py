"""The guidance pass under fairseq's precision wrappers, in process (the fairseq-train
--fp16/--amp tests run the same code in a subprocess, where a mutation tool cannot see it):
fairseq's own FP16Optimizer (flat and per-tensor fp32 masters), MemoryEfficientFP16Optimizer
and AMPOptimizer wrap a guided optimizer on a tiny model's parameters on the CPU, and
precision.py must find the tensors the guided optimizer stepped, the loss scale and the
autocast of each. The CUDA calls are stood in for narrowly: torch.cuda.current_device (the
key of fairseq's flat buffer, as tests/launchers/cpu_as_cuda.py does), the CUDA GradScaler
of --amp (torch's same GradScaler on the CPU) and, for the autocast of a GPU machine,
torch.cuda.is_available."""
import functools
import warnings

import pytest
import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim import build_optimizer
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.optim.fp16_optimizer import FP16Optimizer, MemoryEfficientFP16Optimizer

import fairseq_guided  # noqa: F401
from fairseq_guided import channels
from fairseq_guided.guidance.precision import (guidance_autocast, guidance_loss_scale, master_slots,
                                               split_flat_master)
from fairseq_guided.optim.guided_base import find_guided
from conftest import PLUGIN

SHAPES = [(4, 3), (4,), (2, 4), (2,)]  # the tiny model's parameters, in order
REGIONS = [slice(0, 12), slice(12, 16), slice(16, 24), slice(24, 26)]


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, 4)
        self.out = torch.nn.Linear(4, 2)


@functools.lru_cache(maxsize=None)
def cfg_of(*flags):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["unused-data", "--user-dir", PLUGIN, "--arch", "transformer",
                                                "--lr", "0.01", "--fp16-init-scale", "8", *flags])
    return convert_namespace_to_omegaconf(args)


@pytest.fixture
def tiny(monkeypatch):
    """A tiny model's trainable params, its layout recorded as a guided task records it (restored after)."""
    monkeypatch.setattr(channels, "_layout", {"model": ([], []), "criterion": ([], [])})
    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)  # cpu_as_cuda.py's stand-in

    def make(half=False):
        torch.manual_seed(0)
        model = Tiny()
        channels.record_layout("model", model)
        channels.record_layout("criterion", torch.nn.Module())
        if half:
            model.half()
        return [p for p in model.parameters() if p.requires_grad]
    return make


@pytest.fixture
def cpu_grad_scaler(monkeypatch):
    """--amp's GradScaler as torch's own class for device 'cpu' (the CUDA one disables itself here)."""
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", lambda **kwargs: torch.amp.GradScaler("cpu", **kwargs))


def backward(optimizer, params):
    optimizer.zero_grad()
    optimizer.backward(sum((p.float() ** 2).sum() for p in params))


# -- split_flat_master ----------------------------------------------------------------------
def _flat(n=12, grad=True):
    flat = torch.nn.Parameter(torch.arange(1.0, n + 1))
    if grad:
        flat.grad = torch.arange(1.0, n + 1) * -10
    return flat


def test_split_flat_master_views_are_the_buffer_and_its_gradient_at_their_offsets():
    """Views sit at running offsets of the buffer, their .grad at those of its grad; writes show both ways."""
    flat = _flat()
    shapes = [torch.Size([2, 3]), torch.Size([4]), torch.Size([1, 2])]
    views = split_flat_master([flat], shapes)
    assert [tuple(v.shape) for v in views] == [(2, 3), (4,), (1, 2)]
    for view, (start, stop) in zip(views, [(0, 6), (6, 10), (10, 12)]):
        assert view.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
        assert view.storage_offset() == start and view.grad.storage_offset() == start
        assert view.grad.untyped_storage().data_ptr() == flat.grad.untyped_storage().data_ptr()
        assert torch.equal(view.reshape(-1), torch.arange(start + 1.0, stop + 1))
        assert torch.equal(view.grad.reshape(-1), torch.arange(start + 1.0, stop + 1) * -10)
    views[1].add_(100)
    views[2].grad.mul_(0)
    flat.grad[:6].fill_(7)
    assert torch.equal(flat.data[6:10], torch.arange(107.0, 111.0)) and torch.equal(flat.data[:6], torch.arange(1.0, 7))
    assert torch.equal(flat.grad[10:], torch.zeros(2)) and torch.equal(views[0].grad, torch.full((2, 3), 7.0))
    two = split_flat_master([flat], [torch.Size([3, 3]), torch.Size([3])])  # the fewest shapes it splits
    assert [tuple(v.shape) for v in two] == [(3, 3), (3,)] and two[1].storage_offset() == 9
    assert torch.equal(two[1].grad, flat.grad[9:])


@pytest.mark.parametrize("case", ["two params", "not a tensor", "dim 2", "no params", "shapes sum to more",
                                  "shapes sum to less", "one shape", "no shapes", "no grad"])
def test_split_flat_master_is_none_unless_one_flat_buffer_of_exactly_those_shapes(case):
    """None unless one 1-D tensor with a grad and at least 2 shapes summing to its size."""
    shapes = [torch.Size([2, 3]), torch.Size([6])]
    params = {"two params": [_flat(), _flat(4)], "not a tensor": [list(range(12))],
              "dim 2": [torch.nn.Parameter(torch.zeros(3, 4))], "no params": [], "no grad": [_flat(grad=False)]}
    if case == "dim 2":
        params[case][0].grad = torch.zeros(3, 4)
    shapes = {"shapes sum to more": shapes + [torch.Size([1])], "shapes sum to less": shapes[:1] + [torch.Size([5])],
              "one shape": [torch.Size([12])], "no shapes": []}.get(case, shapes)
    assert split_flat_master(params.get(case, [_flat()]), shapes) is None
    assert split_flat_master([_flat()], [torch.Size([2, 3]), torch.Size([6])]) is not None  # the same, whole


# -- master_slots ---------------------------------------------------------------------------
def test_flat_fp16_per_tensor_update_slots_are_the_views_it_stepped(tiny):
    """Flat --fp16, LAMB: a param's slot is its whole view, the view's grad and its group; none before a step."""
    params = tiny(half=True)
    optimizer = FP16Optimizer.build_optimizer(cfg_of("--optimizer", "guided_lamb", "--fp16", "--guided-hparams",
                                                     "alpha", "--guided-groups", "embed,out"), params)
    guided, views = find_guided(optimizer).guided, find_guided(optimizer).flat_views
    assert isinstance(optimizer.fp32_params, dict) and len(views) == 4
    backward(optimizer, params)
    assert master_slots(optimizer, guided, params, views) == {}  # nothing stepped yet
    optimizer.step()
    slots = master_slots(optimizer, guided, params, views)
    assert list(slots) == [id(p) for p in params]
    flat = optimizer.fp32_params[None]
    for p, view, group, region in zip(params, views, [0, 0, 1, 1], REGIONS):
        slot = slots[id(p)]
        assert slot.owner is view and slot.region is None and slot.train_grad is view.grad
        assert type(slot.group_index) is int and slot.group_index == group
        assert torch.equal(slot.train_grad.reshape(-1), flat.grad[region]) and torch.any(flat.grad[region] != 0)


def test_flat_fp16_elementwise_update_slots_are_slices_of_the_one_buffer(tiny):
    """Flat --fp16, Adam: a param's slot is the buffer, its slice of it and the buffer's grad; none before a step."""
    params = tiny(half=True)
    optimizer = FP16Optimizer.build_optimizer(cfg_of("--optimizer", "guided_adam", "--fp16"), params)
    guided = find_guided(optimizer).guided
    assert find_guided(optimizer).flat_views is None
    backward(optimizer, params)
    assert master_slots(optimizer, guided, params, None) == {}
    optimizer.step()
    flat = optimizer.fp32_params[None]
    slots = master_slots(optimizer, guided, params, None)
    assert list(slots) == [id(p) for p in params]
    for p, region in zip(params, REGIONS):
        slot = slots[id(p)]
        assert slot.owner is flat and slot.train_grad is flat.grad
        assert slot.region == region and type(slot.group_index) is int and slot.group_index == 0
        assert torch.equal(flat.data[slot.region].view(p.shape).half(), p.data)


def test_the_one_flat_buffer_is_found_whatever_device_key_fairseq_gave_it(tiny, monkeypatch):
    """One flat buffer is taken whatever device key fairseq gave it (0 on a GPU), not by the params' device index."""
    params = tiny(half=True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    optimizer = FP16Optimizer.build_optimizer(cfg_of("--optimizer", "guided_adam", "--fp16"), params)
    assert list(optimizer.fp32_params) == [0] and params[0].device.index is None
    optimizer.zero_grad()
    optimizer.step()
    flat = optimizer.fp32_params[0]
    slots = master_slots(optimizer, find_guided(optimizer).guided, params, None)
    assert [(slots[id(p)].owner is flat, slots[id(p)].region) for p in params] == [(True, r) for r in REGIONS]


def test_per_tensor_fp16_masters_slots_are_the_fp32_copies(tiny):
    """--fp16-no-flatten-grads: a slot is the fp32 master and its unscaled grad; none before a step, grads or not."""
    params = tiny(half=True)
    optimizer = FP16Optimizer.build_optimizer(cfg_of("--optimizer", "guided_adam", "--fp16",
                                                     "--fp16-no-flatten-grads"), params)
    guided = find_guided(optimizer).guided
    assert isinstance(optimizer.fp32_params, list)
    backward(optimizer, params)
    assert all(p32.grad is not None for p32 in optimizer.fp32_params)
    assert master_slots(optimizer, guided, params, None) == {}
    before = [p.data.float() for p in params]
    optimizer.step()
    slots = master_slots(optimizer, guided, params, None)
    assert list(slots) == [id(p) for p in params]
    for p, p32 in zip(params, optimizer.fp32_params):
        slot = slots[id(p)]
        assert slot.owner is p32 and slot.train_grad is p32.grad and slot.region is None
        assert type(slot.group_index) is int and slot.group_index == 0
    for p32, b in zip(optimizer.fp32_params, before):  # the unscaled gradient of sum(p^2)
        torch.testing.assert_close(p32.grad, 2 * b, rtol=1e-3, atol=0)


@pytest.mark.parametrize("wrapper", ["memory-efficient-fp16", "amp", "fp32"])
def test_slots_are_the_parameters_when_the_optimizer_steps_them(tiny, cpu_grad_scaler, wrapper):
    """mem-efficient fp16, amp, fp32: slots are the params, their grads and groups, for those with state and a grad."""
    params = tiny(half=wrapper == "memory-efficient-fp16")
    cfg = cfg_of("--optimizer", "guided_adam", "--guided-hparams", "alpha", "--guided-groups", "embed,out")
    optimizer = {"memory-efficient-fp16": lambda: MemoryEfficientFP16Optimizer.build_optimizer(cfg, params),
                 "amp": lambda: AMPOptimizer.build_optimizer(cfg, params),
                 "fp32": lambda: build_optimizer(cfg.optimizer, params)}[wrapper]()
    guided = find_guided(optimizer).guided
    backward(optimizer, params)
    assert all(p.grad is not None for p in params)
    assert master_slots(optimizer, guided, params, None) == {}  # gradients, but no step yet
    optimizer.step()
    assert guided.step_count == 1
    slots = master_slots(optimizer, guided, params, None)
    assert list(slots) == [id(p) for p in params]
    for p, group in zip(params, [0, 0, 1, 1]):
        slot = slots[id(p)]
        assert slot.owner is p and slot.train_grad is p.grad and slot.region is None
        assert type(slot.group_index) is int and slot.group_index == group
    params[2].grad = None  # stepped before, but no gradient now
    assert list(master_slots(optimizer, guided, params, None)) == [id(p) for i, p in enumerate(params) if i != 2]


def test_flat_views_are_ignored_where_fairseq_keeps_no_flat_master(tiny):
    """Views passed where fairseq keeps no flat fp32 master are ignored: the slots stay the stepped params."""
    params = tiny()
    optimizer = build_optimizer(cfg_of("--optimizer", "guided_adam").optimizer, params)
    guided = find_guided(optimizer).guided
    backward(optimizer, params)
    optimizer.step()
    stray = split_flat_master([_flat(26)], [torch.Size(s) for s in SHAPES])
    slots = master_slots(optimizer, guided, params, stray)
    assert [slots[id(p)].owner is p for p in params] == [True] * 4


# -- guidance_loss_scale --------------------------------------------------------------------
@pytest.mark.parametrize("wrapper", [FP16Optimizer, MemoryEfficientFP16Optimizer])
def test_fp16_guidance_takes_the_dynamic_loss_scale_as_it_is_now(tiny, wrapper):
    """--fp16, --memory-efficient-fp16: the dynamic loss scale as a float (halved by an overflow), not 1/factor."""
    params = tiny(half=True)
    optimizer = wrapper.build_optimizer(cfg_of("--optimizer", "guided_adam", "--fp16"), params)
    backward(optimizer, params)
    assert optimizer._multiply_factor == 1 / 8
    scale = guidance_loss_scale(optimizer)
    assert type(scale) is float and scale == 8.0
    with pytest.raises(OverflowError):
        optimizer.scaler.check_overflow(float("inf"))
    assert guidance_loss_scale(optimizer) == 4.0


def test_full_precision_guidance_takes_loss_scale_one(tiny):
    """A plain fp32 optimizer (no scaler) gives loss scale 1.0."""
    optimizer = build_optimizer(cfg_of("--optimizer", "guided_adam").optimizer, tiny())
    scale = guidance_loss_scale(optimizer)
    assert type(scale) is float and scale == 1.0


def test_amp_on_a_machine_without_cuda_takes_loss_scale_one(tiny, monkeypatch):
    """fairseq's --amp GradScaler, disabled without CUDA (no _scale attribute), gives 1.0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on a GPU machine too
    params = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = AMPOptimizer.build_optimizer(cfg_of("--optimizer", "guided_adam", "--amp"), params)
    assert not optimizer.scaler.is_enabled() and not hasattr(optimizer.scaler, "_scale")
    backward(optimizer, params)
    assert guidance_loss_scale(optimizer) == 1.0


def test_amp_guidance_takes_the_grad_scalers_own_scale_tensor(tiny, cpu_grad_scaler):
    """--amp: 1.0 until a loss is scaled, then the scaler's own _scale tensor (no host read), backed off by overflow."""
    params = tiny()
    optimizer = AMPOptimizer.build_optimizer(cfg_of("--optimizer", "guided_adam", "--amp"), params)
    assert optimizer.scaler.is_enabled() and optimizer._grad_scaler._scale is None
    assert guidance_loss_scale(optimizer) == 1.0 and type(guidance_loss_scale(optimizer)) is float
    backward(optimizer, params)
    scale = guidance_loss_scale(optimizer)
    assert scale is optimizer._grad_scaler._scale and scale.item() == 8.0
    params[0].grad[0, 0] = float("inf")
    optimizer.step()  # skipped, the scale backs off
    assert find_guided(optimizer).guided.step_count == 0
    scale = guidance_loss_scale(optimizer)
    assert scale is optimizer._grad_scaler._scale and scale.item() == 4.0


class _ScalerAs:
    """An optimizer wrapper that keeps its scaler under one attribute name only."""

    def __init__(self, name, scaler):
        setattr(self, name, scaler)


@pytest.mark.parametrize("name", ["scaler", "_grad_scaler"])
def test_a_grad_scaler_under_either_name_gives_its_scale(name):
    """A GradScaler kept only as .scaler or only as ._grad_scaler gives its scale tensor once it has scaled a loss."""
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    wrapper = _ScalerAs(name, scaler)
    assert guidance_loss_scale(wrapper) == 1.0
    scaler.scale(torch.ones(()))
    assert guidance_loss_scale(wrapper) is scaler._scale and scaler._scale.item() == 16.0


def test_a_scaler_without_a_loss_scale_gives_one():
    """A .scaler that is neither a GradScaler nor has a loss_scale gives 1.0."""
    assert guidance_loss_scale(_ScalerAs("scaler", object())) == 1.0


# -- guidance_autocast ----------------------------------------------------------------------
def _wrappers(params_fp16, params_fp32):
    cfg = cfg_of("--optimizer", "guided_adam")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fairseq's --amp GradScaler without CUDA
        amp = AMPOptimizer.build_optimizer(cfg, params_fp32)
    return {"amp": amp, "fp16": FP16Optimizer.build_optimizer(cfg, params_fp16),
            "memory-efficient-fp16": MemoryEfficientFP16Optimizer.build_optimizer(cfg, params_fp16),
            "fp32": build_optimizer(cfg.optimizer, params_fp32)}


def test_guidance_autocast_is_off_without_cuda_and_warns_nothing(tiny, monkeypatch):
    """Without CUDA every wrapper's guidance autocast is (cuda, fp16, off), asked off so torch warns nothing."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on a GPU machine too
    wrappers = _wrappers(tiny(half=True), tiny())
    for name, optimizer in wrappers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            autocast = guidance_autocast(optimizer)
        assert (autocast.device, autocast.fast_dtype, autocast._enabled) == ("cuda", torch.float16, False), name


def test_guidance_autocast_is_fp16_exactly_under_amp_on_a_cuda_machine(tiny, monkeypatch):
    """On a CUDA machine only --amp autocasts the guidance, to fp16 whatever torch's default cuda autocast dtype is."""
    wrappers = _wrappers(tiny(half=True), tiny())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    default = torch.get_autocast_dtype("cuda")
    torch.set_autocast_dtype("cuda", torch.bfloat16)
    try:
        got = {name: (a.device, a.fast_dtype, a._enabled)
               for name, a in ((n, guidance_autocast(o)) for n, o in wrappers.items())}
    finally:
        torch.set_autocast_dtype("cuda", default)
    assert got == {"amp": ("cuda", torch.float16, True), "fp16": ("cuda", torch.float16, False),
                   "memory-efficient-fp16": ("cuda", torch.float16, False), "fp32": ("cuda", torch.float16, False)}
