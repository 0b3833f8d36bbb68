"""In-place ops that accept a Python number or a 0-d tensor as the scalar.

With a Python number they use the same fused kernels as torch/fairseq optimizers (so a
guided optimizer learning nothing follows its stock twin bit for bit); with a learned
0-d device tensor they stay on the device (no host sync).
"""
import torch


def is_number(x):
    return isinstance(x, (int, float))


def add_scaled_(target, other, scale):
    """target += scale * other"""
    if is_number(scale):
        return target.add_(other, alpha=scale)
    return target.add_(other * scale)


def add_scaled_product_(target, a, b, scale):
    """target += scale * a * b"""
    if is_number(scale):
        return target.addcmul_(a, b, value=scale)
    return target.add_(a * b * scale)


def add_scaled_ratio_(target, num, den, scale):
    """target += scale * num / den"""
    if is_number(scale):
        return target.addcdiv_(num, den, value=scale)
    return target.add_(num / den * scale)


def decay_(param, weight_decay, lr):
    """param -= weight_decay * lr * param (skipped for a constant 0, as fairseq does)."""
    if is_number(weight_decay) and weight_decay == 0:
        return param
    return add_scaled_(param, param, -weight_decay * lr)


def dot(a, b):
    """<a, b> over all elements, as one fused kernel."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


# -- the same over lists of tensors (one foreach kernel per op, no per-tensor launches) --


def foreach_ema_(averages, values, decay):
    """averages = decay * averages + (1 - decay) * values, for every pair."""
    torch._foreach_mul_(averages, decay)
    if is_number(decay):
        # the kernels torch/fairseq Adam use, so a constant decay matches them bit for bit
        torch._foreach_add_(averages, values, alpha=1 - decay)
    else:
        # a 0-d device tensor cannot be an alpha without a host read: scale a copy. (The
        # copy-free decay (a - v) + v cancels badly when decay is near 1.)
        torch._foreach_add_(averages, torch._foreach_mul(values, 1 - decay))


def foreach_ema_square_(averages, values, decay):
    """averages = decay * averages + (1 - decay) * values^2, for every pair."""
    if is_number(decay):
        torch._foreach_mul_(averages, decay)
        torch._foreach_addcmul_(averages, values, values, value=1 - decay)
    else:
        squares = torch._foreach_mul(values, values)
        torch._foreach_mul_(squares, 1 - decay)
        torch._foreach_mul_(averages, decay)
        torch._foreach_add_(averages, squares)


def foreach_decay_(params, weight_decay, lr):
    """p -= weight_decay * lr * p (skipped for a constant 0, as fairseq does)."""
    if is_number(weight_decay) and weight_decay == 0:
        return
    scale = -weight_decay * lr
    if is_number(scale):
        torch._foreach_add_(params, params, alpha=scale)
    else:
        torch._foreach_mul_(params, 1 + scale)


def foreach_add_scaled_ratio_(targets, nums, dens, scale):
    """t += scale * n / d for every triple. With a tensor scale `dens` is overwritten."""
    if is_number(scale):
        torch._foreach_addcdiv_(targets, nums, dens, value=scale)
    else:
        # d <- scale * n / d in place (no second parameter-sized list), then one add
        torch._foreach_reciprocal_(dens)
        torch._foreach_mul_(dens, nums)
        torch._foreach_mul_(dens, scale)
        torch._foreach_add_(targets, dens)
