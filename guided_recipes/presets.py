"""Every preset, in one form: YAML under configs/, read here.

  configs/nmt/PRESET.yaml    fairseq-hydra-train's config of the NMT recipe (cpu, gpu, paper, tiny),
  configs/nmt/recipes.yaml   what the recipe needs besides (corpus, seeds, evaluation),
  configs/nmt/tuning_free.yaml  the tuning-free arms (schedule-free AdamW, Prodigy),
  configs/t5/PRESET.yaml     the T5 recipe (tiny, paper): each setting's value and its source,
  configs/bench/DEVICE.yaml  the benchmarks' model (cpu, cuda).
"""
from dataclasses import dataclass

import yaml

from .common import CONFIGS


def load(kind: str, name: str) -> dict:
    return yaml.safe_load((CONFIGS / kind / f"{name}.yaml").read_text())


@dataclass(frozen=True)
class Preset:
    """An NMT preset: configs/nmt/NAME.yaml and its entry in configs/nmt/recipes.yaml."""
    name: str
    config: dict  # configs/nmt/NAME.yaml as written (fairseq's training config)
    corpus: str  # offline | wmt19
    vocab_size: int
    seeds: tuple
    eval_batch_size: int
    parallel: int  # runs trained at once
    hardware: str
    data_options: tuple = ()

    @property
    def fp16(self) -> bool:
        return bool(self.config.get("common", {}).get("fp16", False))

    @property
    def max_update(self) -> int:
        return int(self.config["optimization"]["max_update"])


def nmt_presets() -> dict:
    presets = {}
    for name, extra in load("nmt", "recipes").items():
        presets[name] = Preset(name=name, config=load("nmt", name), corpus=extra["corpus"],
                               vocab_size=extra["vocab_size"], seeds=tuple(extra["seeds"]),
                               eval_batch_size=extra["eval_batch_size"], parallel=extra["parallel"],
                               hardware=extra["hardware"], data_options=tuple(extra.get("data_options", ())))
    return presets


NMT = nmt_presets()
# the tuning-free optimizers a user might pick instead of guidance
TUNING_FREE = load("nmt", "tuning_free")
# {preset: {setting: (value, source)}}
T5 = {name: {key: (entry["value"], entry["source"]) for key, entry in load("t5", name).items()}
      for name in ("tiny", "paper")}
# {device: {model: fairseq-train flags, max_tokens, extra: more flags}}
BENCH = {device: load("bench", device) for device in ("cpu", "cuda")}
