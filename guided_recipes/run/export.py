"""A guided checkpoint as an ordinary fairseq translation checkpoint, for whoever receives it.

    python scripts/export_checkpoint.py checkpoints/guided/checkpoint_best.pt model.pt

Why: a checkpoint that fairseq-train writes holds, besides tensors, an argparse.Namespace
(the model's config), numpy scalars (metrics) and the optimizer's state. torch >= 2.6 loads
with weights_only=True by default, so stock fairseq-generate and fairseq-interactive refuse
such a file ("UnpicklingError ... argparse.Namespace") unless the plugin's --user-dir
allows those types; and the saved task, guided_translation, exists only with the plugin
(fairseq's hub loader, TransformerModel.from_pretrained, sets up the saved task).

The export keeps the weights and the model config (as the nested dict fairseq-hydra-train
saves, which stock fairseq rebuilds the model from), names the stock `translation` task
with only its own fields, and drops what only training needs: the optimizer state, the
learned values' meta-optimizer, metrics and the plugin's task and optimizer settings. The
file is then checked to load with torch's default (weights_only) loading, in this process
without the plugin imported.
"""
import argparse
import collections
import numbers
import sys
from dataclasses import fields
from pathlib import Path

import numpy
import torch

# Types fairseq-train (and the plugin's metrics) put into a checkpoint besides tensors and
# builtins, allowed only while the input is read: the same list compat.py gives torch for
# fairseq's own loads; not imported from there, since importing the plugin would also
# allow them for the check of the output.
INPUT_GLOBALS = [argparse.Namespace, collections.OrderedDict, numpy._core.multiarray._reconstruct,
                 numpy._core.multiarray.scalar, numpy.ndarray, numpy.dtype,
                 *(type(numpy.dtype(t)) for t in ("int64", "int32", "float64", "float32"))]
TASKS = ("guided_translation", "translation")


class ExportError(Exception):
    """A checkpoint that cannot be exported, or an output that would not load; one line."""


def load(path: Path) -> dict:
    if not path.is_file():
        raise ExportError(f"no checkpoint {path}")
    with torch.serialization.safe_globals(INPUT_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def plain(value, where: str):
    """`value` with numpy scalars as Python numbers; anything else that is not a builtin
    container, number, string or tensor is an ExportError naming where it is."""
    if isinstance(value, dict):
        return {k: plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, numpy.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, numbers.Number, torch.Tensor)):
        return value
    raise ExportError(f"{where} is a {type(value).__name__}, which stock torch.load refuses")


def model_config(model, where: Path) -> dict:
    """The model config as a nested dict stock fairseq builds the model from."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_DATACLASS_REGISTRY
    from omegaconf import OmegaConf

    if isinstance(model, argparse.Namespace):
        name = getattr(model, "_name", None) or getattr(model, "arch", None)
        if name in MODEL_DATACLASS_REGISTRY:
            # as fairseq's build_model does with a Namespace (dataclass defaults, then the
            # flat legacy names into their nested fields): a dict of flat names would be
            # merged into the dataclass with those names dropped
            config = OmegaConf.to_container(OmegaConf.structured(MODEL_DATACLASS_REGISTRY[name].from_namespace(model)))
            config["_name"] = name
        else:  # an architecture without a dataclass reads its flat names itself
            config = dict(vars(model), _name=name)
    else:
        config = dict(model)
        name = config.get("_name") or config.get("arch")
    if name not in ARCH_MODEL_REGISTRY and name not in MODEL_DATACLASS_REGISTRY:
        raise ExportError(f"{where}: model {name!r} is not one of stock fairseq's (a plugin's model "
                          "needs the plugin to load)")
    return config


def task_config(task: dict, where: Path) -> dict:
    from fairseq.tasks.translation import TranslationConfig

    if task.get("_name") not in TASKS:
        raise ExportError(f"{where}: task {task.get('_name')!r}; only {' and '.join(TASKS)} checkpoints are exported")
    known = {f.name for f in fields(TranslationConfig)}
    return dict({k: v for k, v in task.items() if k in known}, _name="translation")


def exported(state: dict, where: Path) -> dict:
    cfg = state.get("cfg")
    if not cfg:
        raise ExportError(f"{where} has no 'cfg' (a checkpoint from fairseq before 0.10?); "
                          "stock fairseq loads it with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1")
    cfg = dict(cfg)
    optimizer = dict(cfg.get("optimizer") or {})
    cfg["task"] = task_config(cfg["task"], where)
    cfg["model"] = model_config(cfg["model"], where)
    # training-only settings, some of them the plugin's own names: stock fairseq-train takes
    # these from its command line when it continues from the export
    cfg["optimizer"] = cfg["lr_scheduler"] = None
    cfg["common"] = dict(cfg["common"], user_dir=None)
    history = state["optimizer_history"][-1]
    return {
        "args": None,
        "cfg": plain(cfg, "cfg"),
        "model": state["model"],
        "criterion": None,
        "optimizer_history": [{"criterion_name": history["criterion_name"], "optimizer_name": "none (exported)",
                               "lr_scheduler_state": {}, "num_updates": int(history["num_updates"])}],
        "task_state": {},
        "extra_state": {"train_iterator": {"epoch": int(state["extra_state"]["train_iterator"]["epoch"])}},
        # what it came from, for the record (fairseq ignores keys it does not know)
        "fairseq_guided_export": {"from": Path(where).name, "num_updates": int(history["num_updates"]),
                                  "optimizer": optimizer.get("_name"),
                                  "guided_hparams": optimizer.get("guided_hparams", "")},
    }


def export(src: Path, dst: Path) -> dict:
    if dst.exists():
        raise ExportError(f"{dst} exists: refusing to overwrite (remove it or choose another name)")
    out = exported(load(src), src)
    if "fairseq_guided" in sys.modules:  # its add_safe_globals would make the check below pass
        raise ExportError("run the export in a process that has not imported fairseq_guided")
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(out, tmp)
    try:
        torch.load(tmp, map_location="cpu")  # torch's default: what stock fairseq does
    except Exception as e:  # the file must load as it is, or it is not written at all
        tmp.unlink()
        raise ExportError(f"the export of {src} would not load with torch's default loading: {e}") from e
    tmp.replace(dst)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python scripts/export_checkpoint.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint of a guided (or stock) translation run")
    p.add_argument("output", type=Path, help="the file to write (must not exist)")
    args = p.parse_args(argv)
    try:
        out = export(args.checkpoint, args.output)
    except ExportError as e:
        print(f"export_checkpoint: error: {e}", file=sys.stderr)
        return 2
    model = out["cfg"]["model"]["_name"]
    print(f"export_checkpoint: {args.output}: model {model}, task translation, "
          f"{out['optimizer_history'][0]['num_updates']} updates; loads in stock fairseq-generate "
          "and fairseq-interactive without --user-dir")
    return 0
