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
