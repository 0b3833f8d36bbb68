"""`--task guided_span_corruption`: T5's span-corruption pretraining on monolingual text,
with the guidance meta step.

Data: a folder from `fairseq-preprocess --only-source` holding dict.txt and the splits
(train, valid, and the held-out guidance split, `guide` by default, of the same text). The
dictionary must contain the sentinels <extra_id_0>, <extra_id_1>, ... (scripts/
prepare_monolingual.sh makes one from a sentencepiece model with them as user symbols).
Each split's lines are joined (their end-of-sentence dropped, as T5 concatenates documents)
and cut into blocks whose corrupted input, plus end-of-sentence, is --inputs-length tokens.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.data import Dictionary, StripTokenDataset, TokenBlockDataset, data_utils
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..data import span_corruption
from ..data.span_corruption_dataset import SpanCorruptionDataset
from ..guidance.config import GuidanceConfig, check_guidance_fits, check_split_files, validate_guidance_config
from ..guidance.runner import GuidanceRunner
from ..guidance.task import GuidedTaskMixin
from ..models import t5_architectures  # noqa: F401 (t5_small / t5_tiny for this task's runs)

logger = logging.getLogger(__name__)

SENTINEL = "<extra_id_{}>"


@dataclass
class SpanCorruptionConfig(FairseqDataclass):
    data: str = field(default="", metadata={"help": "folder of fairseq-preprocess --only-source "
                                            "output: dict.txt and {train,valid,guide}.{bin,idx}"})
    inputs_length: int = field(
        default=512, metadata={"help": "tokens of a corrupted input, end-of-sentence included "
                               "(T5: 512, i.e. blocks of 568 text tokens at the defaults)"})
    noise_density: float = field(
        default=0.15, metadata={"help": "fraction of each block's tokens that is noised; in (0, 1)"})
    mean_noise_span_length: float = field(
        default=3.0, metadata={"help": "mean length of a noised span, in tokens; >= 1"})
    max_source_positions: int = field(default=1024, metadata={"help": "max input tokens"})
    max_target_positions: int = field(default=1024, metadata={"help": "max target tokens"})
    seed: int = II("common.seed")
    dataset_impl: Optional[str] = II("dataset.dataset_impl")


@dataclass
class GuidedSpanCorruptionConfig(SpanCorruptionConfig, GuidanceConfig):
    pass


def validate_span_config(cfg) -> None:
    """Flag errors before any data is read; each message names its flag."""
    if not cfg.data:
        raise ValueError("guided_span_corruption needs the data folder (fairseq-train DATA ...)")
    if not 0.0 < cfg.noise_density < 1.0:
        raise ValueError(f"--noise-density must be in (0, 1); got {cfg.noise_density}")
    if not cfg.mean_noise_span_length >= 1.0:
        raise ValueError(f"--mean-noise-span-length must be >= 1; got {cfg.mean_noise_span_length}")
    try:
        span_corruption.check_settings(cfg.noise_density, cfg.mean_noise_span_length)
    except ValueError as e:
        raise ValueError(f"--noise-density / --mean-noise-span-length: {e}") from None
    if not cfg.inputs_length >= 4:
        raise ValueError(f"--inputs-length must be >= 4; got {cfg.inputs_length}")
    if cfg.inputs_length > cfg.max_source_positions:
        raise ValueError(f"--inputs-length {cfg.inputs_length} exceeds --max-source-positions "
                         f"{cfg.max_source_positions}")


def sentinel_ids(dictionary: Dictionary):
    """Ids of <extra_id_0>, <extra_id_1>, ... for as long as they are in the dictionary."""
    ids = []
    while SENTINEL.format(len(ids)) in dictionary.indices:
        ids.append(dictionary.index(SENTINEL.format(len(ids))))
    return ids


@register_task("guided_span_corruption", dataclass=GuidedSpanCorruptionConfig)
class GuidedSpanCorruptionTask(GuidedTaskMixin, FairseqTask):
    """Span-corruption pretraining whose optimizer hyper-parameters are learned from a
    held-out split of the same text."""

    cfg: GuidedSpanCorruptionConfig

    def __init__(self, cfg, dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.sentinel_ids = sentinel_ids(dictionary)
        self.block_length = span_corruption.raw_length_for_inputs(
            cfg.inputs_length, cfg.noise_density, cfg.mean_noise_span_length)
        _, spans_needed = span_corruption.noise_counts(
            self.block_length, cfg.noise_density, cfg.mean_noise_span_length)
        if spans_needed > len(self.sentinel_ids):
            raise ValueError(
                f"--inputs-length {cfg.inputs_length} makes blocks of {self.block_length} tokens "
                f"with {spans_needed} noise spans, but the dictionary has {len(self.sentinel_ids)} "
                f"sentinels ({SENTINEL.format(0)}, ...); rebuild it with more or shorten inputs")
        self.guidance = GuidanceRunner(self, cfg)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        validate_span_config(cfg)
        validate_guidance_config(cfg)
        dict_path = os.path.join(cfg.data, "dict.txt")
        if not os.path.exists(dict_path):
            raise ValueError(f"no dict.txt in {cfg.data}: binarize the text with fairseq-preprocess "
                             f"--only-source --srcdict (see scripts/prepare_monolingual.sh)")
        task = cls(cfg, Dictionary.load(dict_path))
        logger.info(f"dictionary: {len(task.dictionary)} types, {len(task.sentinel_ids)} sentinels; "
                    f"blocks of {task.block_length} tokens -> inputs of {cfg.inputs_length}")
        if cfg.guidance_source == "heldout":
            check_split_files(cfg.data, cfg.guidance_subset, {None: task.dictionary})
            task.load_dataset(cfg.guidance_subset)  # fail now, not at the first update
            if len(task.dataset(cfg.guidance_subset)) == 0:
                raise ValueError(f"--guidance-subset {cfg.guidance_subset!r} is empty")
            check_guidance_fits(task, cfg)
        return task

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        path = os.path.join(self.cfg.data, split)
        lines = data_utils.load_indexed_dataset(path, self.dictionary, self.cfg.dataset_impl, combine=combine)
        if lines is None:
            hint = " (--guidance-subset)" if split == self.cfg.guidance_subset else ""
            raise ValueError(f"no split {split!r}{hint} in {self.cfg.data}: expected {path}.bin/.idx")
        # each binarized line ends with one end-of-sentence: drop it, so sizes shrink by one
        text = StripTokenDataset(lines, self.dictionary.eos())
        blocks = TokenBlockDataset(text, lines.sizes - 1, self.block_length, pad=self.dictionary.pad(),
                                   eos=self.dictionary.eos(), break_mode="none")
        self.datasets[split] = SpanCorruptionDataset(
            blocks, self.dictionary, self.sentinel_ids, self.cfg.noise_density,
            self.cfg.mean_noise_span_length, seed=self.cfg.seed, shuffle=(split == "train"),
            vary_with_epoch=(split == "train"))
        logger.info(f"{split}: {len(lines)} lines -> {len(blocks)} blocks")

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary
