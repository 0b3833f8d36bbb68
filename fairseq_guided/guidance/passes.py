"""The guidance forward+backward passes at the updated parameters, and the one context
they run in: the training gradients set aside, the model in eval mode, all restored."""
import contextlib

import torch
import torch.nn.functional as F
from fairseq.models import BaseFairseqModel


def unwrap_model(model):
    """The BaseFairseqModel inside fairseq's distributed wrappers."""
    while not isinstance(model, BaseFairseqModel) and hasattr(model, "module"):
        model = model.module
    return model


def token_mean_nll(model, sample, padding_idx):
    """Sum of target-token negative log-likelihoods (no label smoothing) and the count."""
    net_output = model(**sample["net_input"])
    lprobs = model.get_normalized_probs(net_output, log_probs=True)
    target = model.get_targets(sample, net_output)
    loss_sum = F.nll_loss(lprobs.reshape(-1, lprobs.size(-1)).float(), target.reshape(-1),
                          ignore_index=padding_idx, reduction="sum")
    return loss_sum, target.ne(padding_idx).sum()


@contextlib.contextmanager
def gradients_aside(model, params):
    """Yields the unwrapped model for one guidance pass: the training gradients of
    `params` set aside (the guided optimizer's step already used them; fairseq zeroes them
    only at the next update), eval mode (no dropout in the guidance loss), autograd on and
    DDP's all-reduce off. The gradients and the mode come back on the way out."""
    module = unwrap_model(model)
    stashed_grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    was_training = module.training
    module.eval()
    try:
        # torch's DDP hooks every parameter: keep them from all-reducing guidance gradients
        with getattr(model, "no_sync", contextlib.nullcontext)(), torch.enable_grad():
            yield module
    finally:
        module.train(was_training)
        for p, g in zip(params, stashed_grads):
            p.grad = g


def fold_guidance_gradients(model, parts, params, slots, rows, scale, autocast, padding_idx):
    """Forward+backward of the guidance sample (`parts`, length-sorted batches whose
    gradients add up); each stepped tensor's guidance gradient goes into `rows` (its dot
    products) as soon as the backward produces it, then is freed, so no second gradient
    buffer lives. `slots`: id(parameter) -> precision.MasterSlot. The loss is multiplied
    by `scale` (the training loss scale); the dots are linear in the gradient, so the
    caller takes it off their sum, once. Returns (sum of token NLLs, token count)."""

    def hook_for(slot):
        def hook(param):
            rows.add(slot.group_index, slot.owner, param.grad.float(), grad=slot.train_grad,
                     region=slot.region, disposable=True)
            param.grad = None
        return hook

    handles = []
    loss_sum = ntokens = 0
    try:
        with gradients_aside(model, params) as module, autocast:
            for k, part in enumerate(parts):
                if k == len(parts) - 1:
                    # earlier parts' gradients add up in .grad; the hooks fire after the
                    # last part is accumulated, so they see the whole sample's
                    handles = [p.register_post_accumulate_grad_hook(hook_for(slots[id(p)]))
                               for p in params if id(p) in slots]
                part_loss, part_tokens = token_mean_nll(module, part, padding_idx)
                (part_loss * scale).backward()
                loss_sum, ntokens = loss_sum + part_loss.detach(), ntokens + part_tokens
    finally:
        for h in handles:
            h.remove()
    return loss_sum, ntokens


def drop_guidance_gradients(model, parts, params, scale, autocast, padding_idx):
    """The one cost the method cannot avoid, alone: a forward+backward of the guidance
    sample whose gradients are dropped as they arrive (the meta step's memory, none of
    its dot products)."""
    handles = []
    try:
        with gradients_aside(model, params) as module:
            handles = [p.register_post_accumulate_grad_hook(_drop_grad) for p in params]
            with autocast:
                for part in parts:
                    loss_sum, _ = token_mean_nll(module, part, padding_idx)
                    (loss_sum * scale).backward()
    finally:
        for h in handles:
            h.remove()


def _drop_grad(param):
    param.grad = None
