"""Every channel into fairseq that its API leaves no other way to open, in one place,
each with its reason. Everything else in the plugin passes data as arguments.

1. The parameter layout (record_layout / recorded_layout): a module-level record.
   fairseq's Trainer builds the optimizer from the parameter list alone
   (build_optimizer(cfg, params)), and under flat --fp16 that list is one fp32 buffer. A
   per-tensor update (LAMB, Adafactor) and --guided-groups need the shapes and names of
   the tensors in it, which only the task sees, when it builds the model and the
   criterion (guidance/task.py). The record holds them until the optimizer is built.

2. Patches of fairseq functions, applied once when the plugin is imported (install()):
   fairseq-train offers no hook at these points. What each fixes is in compat.py (1-5)
   and preflight.py (6):
   1. torch.load's safe globals: fairseq's checkpoint loader does not pass weights_only,
      which torch >= 2.6 defaults to True;
   2. checkpoint_utils.PathManager.copy: checkpoint_last.pt / _best.pt made atomic;
   3. checkpoint_utils.torch_persistent_save: a failed write names its file and removes
      its partial .tmp;
   4. distributed utils._broadcast_object_slow: a multi-worker resume loads the
      broadcast state (it holds omegaconf types);
   5. NanDetector.add_hooks: its report survives torch 2.13's backward hooks;
   6. an atexit handler stopping fairseq's prefetch threads (else a finished run can
      abort with exit -6);
   7. checkpoint_utils.load_checkpoint: the one call between building the trainer and
      the first update, where preflight checks a guided run (save-dir lock, checkpoint
      CRCs, learned state).

3. A process-wide forward pre-hook (until_first_model): a schedule-free optimizer must
   follow its model's train/eval mode, but fairseq hands an optimizer only the parameter
   list and a stock task knows nothing of it; the hook waits for the model whose
   parameters the optimizer holds and removes itself (optim/model_mode_link.py).
"""
from __future__ import annotations

import torch

_layout = {"model": ([], []), "criterion": ([], [])}  # part -> (shapes, names)


def record_layout(part: str, module: torch.nn.Module) -> None:
    """Remember the trainable parameter shapes and names of the model or the criterion
    just built, in the order fairseq's Trainer flattens them (requires_grad, model then
    criterion; named_parameters() walks the same tensors as parameters())."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    _layout[part] = ([p.shape for _, p in named],
                     [n if part == "model" else f"{part}.{n}" for n, _ in named])


def recorded_layout() -> tuple[list, list]:
    """(shapes, names) of every tensor the optimizer will be handed, in order."""
    return (_layout["model"][0] + _layout["criterion"][0],
            _layout["model"][1] + _layout["criterion"][1])


def install() -> None:
    from . import compat, preflight

    compat.allow_fairseq_checkpoint_types()
    compat.make_checkpoint_copies_atomic()
    compat.name_failed_checkpoint_writes()
    compat.allow_broadcast_resume_state()
    compat.fix_nan_detector()
    compat.stop_prefetch_threads_at_exit()
    preflight.install()


def until_first_model(claim) -> None:
    """Call claim(module, args) before every module forward in the process until it
    returns True."""
    def hook(module, args):
        if claim(module, args):
            handle.remove()

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
