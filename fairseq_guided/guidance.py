"""The meta step as a fairseq task runs it: which guidance batch, the guidance pass at
the updated parameters, the hypergradient reduction across workers, and the logs.

Task-independent: a task mixes in `GuidanceConfig` fields and calls
`GuidanceRunner.optimizer_step` from its `optimizer_step` hook, which fairseq calls once
per update (after all --update-freq micro-batches), so the meta step runs once per update.
"""

import contextlib
import glob
import logging
import math
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.distributed import utils as dist_utils
from fairseq.models import BaseFairseqModel
from omegaconf import II

from . import flat_masters
from .guidance_batches import GuidanceBatches
from .hypergrad.optimizers import GuidedOptimizerBase
from .masters import find_fairseq_guided, guidance_loss_scale, master_slots

logger = logging.getLogger(__name__)

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
        return  # GuidanceRunner names the max positions
    if hasattr(dataset, "num_tokens_vec"):
        longest = int(np.max(dataset.num_tokens_vec(indices)))
    else:
        longest = max(int(dataset.num_tokens(int(i))) for i in indices)
    if longest > max_tokens:
        flag = "--guidance-max-tokens" if cfg.guidance_max_tokens else "--max-tokens (used for guidance)"
        raise ValueError(f"{flag} {max_tokens} is smaller than the longest example of --guidance-subset "
                         f"{cfg.guidance_subset!r} ({longest} tokens); set --guidance-max-tokens "
                         f">= {longest}")


def find_guided_optimizer(optimizer) -> Optional[GuidedOptimizerBase]:
    """The GuidedOptimizerBase inside fairseq's optimizer wrappers, or None."""
    seen = optimizer
    for _ in range(6):
        if isinstance(seen, GuidedOptimizerBase):
            return seen
        nxt = None
        for attr in ("fp32_optimizer", "wrapped_optimizer", "_optimizer"):
            nxt = getattr(seen, attr, None)
            if nxt is not None:
                break
        if nxt is None:
            return None
        seen = nxt
    return None


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


class GuidanceRunner:
    def __init__(self, task, cfg):
        self.task = task
        self.cfg = cfg
        self._batches = None  # GuidanceBatches, built at the first meta step
        self._cached = (None, None)  # (batch number, sample on device)
        self._epoch = 1

    # -- which guidance batch -----------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def batch_number(self, update_num: int) -> int:
        """Global guidance batch j: fixed, per meta step, or per epoch."""
        if self.cfg.guidance_refresh == "never":
            return 0
        if self.cfg.guidance_refresh == "epoch":
            return self._epoch - 1
        return update_num // self.cfg.guidance_interval

    def sample(self, model, update_num: int, device):
        """This worker's share of guidance batch j as a list of collated parts (a
        deterministic function of j and the seed, so a resumed run draws the same batches
        without saving an iterator)."""
        j = self.batch_number(update_num)
        if self._cached[0] == j:
            return self._cached[1]
        if self._batches is None:
            self._batches = GuidanceBatches(self.task, self.cfg, model)
        world = dist_utils.get_data_parallel_world_size()
        rank = dist_utils.get_data_parallel_rank() if world > 1 else 0
        indices = self._batches.at(j * world + rank)
        dataset = self._batches.dataset
        parts = [dataset.collater([dataset[int(i)] for i in part]) for part in self._batches.parts(indices)]
        if self._cached[0] is None:
            self._batches.log_first(indices, parts)
        parts = [utils.apply_to_sample(lambda t: t.to(device), part) for part in parts]
        self._cached = (j, parts)
        return parts

    # -- the meta step ---------------------------------------------------------------------
    @staticmethod
    def guided_optimizer(optimizer) -> GuidedOptimizerBase:
        guided = find_guided_optimizer(optimizer)
        if guided is None:
            raise ValueError(f"--task guided_*: --optimizer {type(optimizer).__name__} learns nothing; "
                             f"use guided_adam, guided_lamb or guided_adafactor (with no "
                             f"--guided-hparams they behave as their stock twins)")
        return guided

    def optimizer_step(self, optimizer, model, update_num: int) -> None:
        guided = self.guided_optimizer(optimizer)
        is_meta_step = update_num % self.cfg.guidance_interval == 0 and guided.learned.names
        if self.cfg.guidance_source == "train":
            guided.keep_step_grad = bool(guided.learned.names)  # a gradient copy only if used
            if is_meta_step and update_num > 0:
                self._train_batch_meta_step(guided, optimizer)
            optimizer.step()
        else:
            steps_before = guided.step_count
            optimizer.step()
            if guided.step_count == steps_before:
                # --amp skipped the step (inf/nan gradients): nothing to differentiate
                metrics.log_scalar("guided_skipped", 1, weight=0, priority=845)
            elif is_meta_step and self.cfg.guidance_time_pass:
                with self._timed("guide_meta_ms", model):
                    self._heldout_meta_step(guided, optimizer, model, update_num)
                self._time_guidance_pass(optimizer, model, update_num)
            elif is_meta_step:
                self._heldout_meta_step(guided, optimizer, model, update_num)
        self._log_values(guided)

    def _train_batch_meta_step(self, guided, optimizer):
        # .grad is the all-reduced gradient of this update's training batch at theta_t:
        # the guidance gradient for the previous update, which made theta_t. fairseq's fp16
        # wrappers apply the pending 1/(loss scale x sample size) factor only in step().
        pending = getattr(optimizer, "_multiply_factor", 1.0)
        rows = guided.hypergradient_rows()
        for gi, p in guided.stepped_params():
            if p.grad is not None and "step_grad" in guided.state[p]:
                rows.add(gi, p, p.grad.float())
        self._apply(guided, rows.total() * pending)

    def _heldout_meta_step(self, guided, optimizer, model, update_num):
        module = unwrap_model(model)  # a DDP wrapper would all-reduce: skip it
        device = guided.learned.device
        parts = self.sample(module, update_num, next(module.parameters()).device)
        params = [p for p in module.parameters() if p.requires_grad]
        slots = master_slots(optimizer, guided, params)
        if not slots:
            raise RuntimeError("cannot find the tensors the guided optimizer updated for this "
                               f"model under {type(optimizer).__name__}")
        scale = guidance_loss_scale(optimizer)
        rows = guided.hypergradient_rows()

        def hook_for(slot):
            def hook(param):
                # Fold this tensor's guidance gradient into its dot products as soon as the
                # backward produces it, then free it: no second gradient buffer lives. The
                # dots are linear in it, so the loss scale comes off their sum, once.
                rows.add(slot.group_index, slot.owner, param.grad.float(), grad=slot.train_grad,
                         region=slot.region, disposable=True)
                param.grad = None
            return hook

        stashed_grads = [p.grad for p in params]
        handles = []
        for p in params:
            p.grad = None
        was_training = module.training
        module.eval()  # no dropout in the guidance loss
        # torch's DDP hooks every parameter: keep them from all-reducing guidance gradients
        no_sync = getattr(model, "no_sync", contextlib.nullcontext)
        loss_sum = ntokens = 0
        try:
            with no_sync(), torch.enable_grad(), self.autocast(optimizer):
                for k, part in enumerate(parts):
                    if k == len(parts) - 1:
                        # earlier parts' gradients add up in .grad; the hooks fire after
                        # the last part is accumulated, so they see the whole sample's
                        handles = [p.register_post_accumulate_grad_hook(hook_for(slots[id(p)]))
                                   for p in params if id(p) in slots]
                    part_loss, part_tokens = token_mean_nll(module, part, self.task.target_dictionary.pad())
                    (part_loss * scale).backward()
                    loss_sum, ntokens = loss_sum + part_loss.detach(), ntokens + part_tokens
        except torch.OutOfMemoryError as e:
            raise RuntimeError(
                f"a part of the guidance batch ({max(int(p['ntokens']) for p in parts)} target tokens) "
                f"does not fit in memory at update {update_num + 1}: lower "
                f"--guidance-max-tokens / --guidance-batch-size") from e
        finally:
            for h in handles:
                h.remove()
            module.train(was_training)
            for p, g in zip(params, stashed_grads):
                p.grad = g
        # K values, or K x groups with --guided-groups: flat for the one reduction
        k = guided.learned.raw.numel()
        raw = guided.learned.raw.reshape(-1)
        stats = torch.cat([rows.total().reshape(-1) / scale,
                           loss_sum.to(device=device, dtype=torch.float64).reshape(1),
                           ntokens.to(device=device, dtype=torch.float64).reshape(1), raw])
        world = dist_utils.get_data_parallel_world_size()
        if world > 1:
            # linear in the guidance gradient: reduce k+2 scalars, not a gradient. The raw
            # values ride along: their sum must be world x each rank's own, a free check
            # that no worker has drifted (as fairseq checks gradient norms).
            stats = dist_utils.all_reduce(stats, group=dist_utils.get_data_parallel_group())
            drift = (stats[k + 2:] - world * raw).abs().max()
            metrics.log_scalar("guided_rank_drift", drift, weight=0, priority=850)
        ntok = stats[k + 1].clamp(min=1)
        metrics.log_scalar("guide_loss", stats[k] / ntok / math.log(2), round=3, priority=810)
        self._apply(guided, (stats[:k] / ntok).reshape(guided.learned.shape))

    @contextlib.contextmanager
    def _timed(self, name, model):
        device = next(unwrap_model(model).parameters()).device
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        yield
        sync()
        metrics.log_scalar(name, 1000 * (time.perf_counter() - start), round=2, priority=860)

    def _time_guidance_pass(self, optimizer, model, update_num):
        """The one cost the method cannot avoid, alone: a forward+backward of the guidance
        batch whose gradients are dropped as they arrive (the meta step's memory, none of
        its dot products)."""
        module = unwrap_model(model)
        parts = self.sample(module, update_num, next(module.parameters()).device)
        params = [p for p in module.parameters() if p.requires_grad]
        stashed_grads = [p.grad for p in params]
        handles = []
        was_training = module.training
        module.eval()
        try:
            for p in params:
                p.grad = None
                handles.append(p.register_post_accumulate_grad_hook(_drop_grad))
            with self._timed("guide_pass_ms", model), getattr(model, "no_sync", contextlib.nullcontext)(), \
                    torch.enable_grad(), self.autocast(optimizer):
                for part in parts:
                    loss_sum, _ = token_mean_nll(module, part, self.task.target_dictionary.pad())
                    (loss_sum * guidance_loss_scale(optimizer)).backward()
        finally:
            for h in handles:
                h.remove()
            module.train(was_training)
            for p, g in zip(params, stashed_grads):
                p.grad = g

    @staticmethod
    def autocast(optimizer):
        """The guidance forward runs in the precision the training forward ran in."""
        amp = type(optimizer).__name__ == "AMPOptimizer" and torch.cuda.is_available()
        return torch.autocast("cuda", dtype=torch.float16, enabled=amp)

    def _apply(self, guided, hypergrad):
        for key, h in _per_value(guided.learned, hypergrad):
            metrics.log_scalar(f"hgrad_{key}", h, round=6, priority=830)
        guided.learned.meta_step(hypergrad)
        metrics.log_scalar("hgrad_nonfinite", guided.learned.nonfinite_count.sum(), weight=0, round=0,
                           priority=840)
        metrics.log_scalar("meta_skipped", guided.learned.skipped_count.sum(), weight=0, round=0,
                           priority=841)

    def _log_values(self, guided):
        for key, value in _per_value(guided.learned, guided.learned.values()):
            metrics.log_scalar(f"guided_{key}", value, weight=0, round=6, priority=820)


def _per_value(learned, table):
    """(log key, 0-d tensor) for a (K,) or (G, K) table: 'alpha', or 'alpha/encoder'
    with --guided-groups. Device tensors: fairseq's meters read them at log time."""
    if learned.groups is None:
        return list(zip(learned.names, table))
    return [(f"{name}/{group}", table[g, k]) for g, group in enumerate(learned.groups)
            for k, name in enumerate(learned.names)]


def _drop_grad(param):
    param.grad = None


class GuidedTaskMixin:
    """The fairseq task hooks every guided task shares (model, criterion, epoch start, train
    step, optimizer step); list it before the stock task class (class
    MyTask(GuidedTaskMixin, TranslationTask)) and set self.guidance in __init__."""

    guidance: GuidanceRunner

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        flat_masters.record_layout("model", model)  # what flat --fp16 will flatten
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        flat_masters.record_layout("criterion", criterion)
        return criterion

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        self.guidance.set_epoch(epoch)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self.guidance.guided_optimizer(optimizer)  # refuse a stock optimizer before any update
        views = getattr(find_fairseq_guided(optimizer), "flat_views", None)
        if views is not None and not getattr(self, "_flat_layout_checked", False):
            flat_masters.check_views_match(views, optimizer.fp16_params, type(optimizer).__name__)
            self._flat_layout_checked = True
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        self.guidance.optimizer_step(optimizer, model, update_num)
