"""The guidance flags (GuidanceConfig, mixed into a guided task's config) and the checks
a guided task runs on them and on the guide split at setup, before any update."""
import glob
import os
import struct
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

GUIDANCE_SOURCES = ChoiceEnum(["heldout", "train"])
GUIDANCE_REFRESH = ChoiceEnum(["never", "step", "epoch"])
GUIDANCE_BATCHING = ChoiceEnum(["random", "bucketed"])


@dataclass
class GuidanceConfig(FairseqDataclass):
    guidance_subset: str = field(
        default="guide", metadata={"help": "held-out split whose loss guides the learned "
                                   "hyper-parameters (never trained on)"}
    )
    guidance_source: GUIDANCE_SOURCES = field(
        default="heldout", metadata={"help": "heldout: a batch of --guidance-subset at the updated "
                                     "parameters (one extra forward/backward per meta step); "
                                     "train: the next training batch's gradient differentiates "
                                     "the previous update (no extra pass, keeps one gradient copy)"}
    )
    guidance_max_tokens: Optional[int] = field(
        default=None, metadata={"help": "max tokens in a guidance batch (per worker); default: "
                                "--max-tokens"}
    )
    guidance_batch_size: Optional[int] = field(
        default=None, metadata={"help": "max sentences in a guidance batch (per worker); default: "
                                "--batch-size"}
    )
    guidance_refresh: GUIDANCE_REFRESH = field(
        default="never", metadata={"help": "never: one guidance batch for the whole run (the "
                                   "paper's default); step: the next batch at every meta step; "
                                   "epoch: a new batch each training epoch"}
    )
    guidance_batching: GUIDANCE_BATCHING = field(
        default="random", metadata={"help": "random: each guidance batch is a uniform random sample "
                                    "of the guide split (all lengths), packed up to the guidance "
                                    "batch size, fixed by --seed (the paper: a held-out sample of the "
                                    "data); bucketed: fairseq's length-sorted batches (little "
                                    "padding, but each batch holds sentences of one length)"}
    )
    guidance_interval: int = field(
        default=1, metadata={"help": "run the meta step every K updates; >= 1"}
    )
    guidance_time_pass: bool = field(
        default=False, metadata={"help": "benchmarks only: time each meta step (logged as "
                                 "guide_meta_ms) and then one plain forward+backward of the same "
                                 "guidance batch (guide_pass_ms), both synchronised; costs that "
                                 "extra pass and host syncs"}
    )
    seed: int = II("common.seed")
    train_max_tokens: Optional[int] = II("dataset.max_tokens")
    train_batch_size: Optional[int] = II("dataset.batch_size")


def validate_guidance_config(cfg) -> None:
    """Refuse flag values no guidance run can use; each message names its flag."""
    if not (isinstance(cfg.guidance_interval, int) and cfg.guidance_interval >= 1):
        raise ValueError(f"--guidance-interval must be an integer >= 1; got {cfg.guidance_interval}")
    for flag, value in (("--guidance-max-tokens", cfg.guidance_max_tokens),
                        ("--guidance-batch-size", cfg.guidance_batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1; got {value}")
    if cfg.guidance_source == "heldout" and not (
        cfg.guidance_max_tokens or cfg.guidance_batch_size or cfg.train_max_tokens or cfg.train_batch_size
    ):
        raise ValueError("set --guidance-max-tokens or --guidance-batch-size (or --max-tokens)")


def check_split_files(data: str, split: str, dictionaries=None) -> None:
    """Name a binarized file of `split` that does not match the corpus before fairseq's
    loader reads it: empty (an interrupted fairseq-preprocess or copy: "cannot mmap an empty
    file"), shorter or longer than its index says (a cut copy: the missing sentences would
    fail only when a guidance batch first draws them), or holding token ids beyond the
    dictionary (binarized with another one: an embedding lookup error at the first meta
    step). `dictionaries`: {language: Dictionary}, with None for a monolingual split."""
    for folder in str(data).split(":"):
        for path in sorted(glob.glob(os.path.join(folder, f"{split}.*bin")) +
                           glob.glob(os.path.join(folder, f"{split}.*idx"))):
            if os.path.getsize(path) == 0:
                raise ValueError(f"--guidance-subset {split!r}: {path} is empty (0 bytes); binarize "
                                 f"the split again with fairseq-preprocess")
        for index in sorted(glob.glob(os.path.join(folder, f"{split}.*idx"))):
            prefix = index[:-len(".idx")]
            if os.path.exists(prefix + ".bin"):
                tokens = _tokens_matching_index(prefix, split)
                stem = os.path.basename(prefix)
                lang = None if stem == split else stem.rsplit(".", 1)[-1]
                dictionary = (dictionaries or {}).get(lang)
                if dictionary is not None and len(tokens) and int(tokens.max()) >= len(dictionary):
                    name = "dict.txt" if lang is None else f"dict.{lang}.txt"
                    raise ValueError(
                        f"--guidance-subset {split!r}: {prefix}.bin holds token id {int(tokens.max())}, "
                        f"but the dictionary ({os.path.join(folder, name)}) has {len(dictionary)} "
                        f"entries: the split was binarized with another dictionary; binarize it again "
                        f"with this one (fairseq-preprocess --srcdict/--tgtdict)")


def _tokens_matching_index(prefix: str, split: str) -> np.ndarray:
    """The token ids of a binarized file (memory-mapped), after checking that its size is
    the one its index describes."""
    from fairseq.data import indexed_dataset

    impl = indexed_dataset.infer_dataset_impl(prefix)
    try:
        if impl == "mmap":
            index = indexed_dataset.MMapIndexedDataset.Index(prefix + ".idx")
            itemsize, count = np.dtype(index.dtype).itemsize, len(index)
            end = int(index[count - 1][0]) + int(index[count - 1][1]) * itemsize if count else 0
            dtype = index.dtype
        elif impl in ("cached", "lazy"):
            index = indexed_dataset.IndexedDataset(prefix)
            itemsize, count, dtype = index.element_size, len(index), index.dtype
            end = int(index.data_offsets[-1]) * itemsize
        else:
            return np.zeros(0, dtype=np.int64)  # raw text, or formats fairseq checks itself
    except (AssertionError, ValueError, KeyError, struct.error) as e:
        raise ValueError(f"--guidance-subset {split!r}: {prefix}.idx is not a readable fairseq index "
                         f"({type(e).__name__}: {e}); binarize the split again with fairseq-preprocess") from None
    size = os.path.getsize(prefix + ".bin")
    if size != end:
        raise ValueError(
            f"--guidance-subset {split!r}: {prefix}.bin has {size} bytes, but its index {prefix}.idx "
            f"describes {count} sentences in {end} bytes (a cut copy, or the index of another "
            f"binarization); binarize the split again with fairseq-preprocess")
    return np.memmap(prefix + ".bin", dtype=dtype, mode="r") if size else np.zeros(0, dtype=np.int64)


def check_guidance_fits(task, cfg) -> None:
    """Refuse a --guidance-max-tokens (or --max-tokens) below the longest guidance example
    now: fairseq's batching would assert on it at the first meta step."""
    max_tokens = cfg.guidance_max_tokens or (None if cfg.guidance_batch_size else cfg.train_max_tokens)
    dataset = task.dataset(cfg.guidance_subset)
    if not max_tokens or len(dataset) == 0:
        return
    indices, _ = dataset.filter_indices_by_size(np.arange(len(dataset)), task.max_positions())
    if len(indices) == 0:
        return  # GuidanceBatches names the max positions
    if hasattr(dataset, "num_tokens_vec"):
        longest = int(np.max(dataset.num_tokens_vec(indices)))
    else:
        longest = max(int(dataset.num_tokens(int(i))) for i in indices)
    if longest > max_tokens:
        flag = "--guidance-max-tokens" if cfg.guidance_max_tokens else "--max-tokens (used for guidance)"
        raise ValueError(f"{flag} {max_tokens} is smaller than the longest example of --guidance-subset "
                         f"{cfg.guidance_subset!r} ({longest} tokens); set --guidance-max-tokens "
                         f">= {longest}")
