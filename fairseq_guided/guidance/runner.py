"""The meta step as a fairseq task runs it, once per update: which guidance batch, the
guidance pass at the updated parameters (passes.py), the hypergradient's reduction across
workers, the meta step and the logs."""
import contextlib
import math
import time

import torch
from fairseq import metrics, utils
from fairseq.distributed import utils as dist_utils

from ..optim.guided_base import find_guided
from .batches import GuidanceBatches
from .passes import drop_guidance_gradients, fold_guidance_gradients, unwrap_model
from .precision import check_views_match, guidance_autocast, guidance_loss_scale, master_slots


class GuidanceRunner:
    """The guidance side of one guided task: after each optimizer step, the meta step on
    the learned values of the guided optimizer.

    fairseq calls the task's optimizer_step hook once per update (after all --update-freq
    micro-batches), which calls optimizer_step here. With --guidance-source heldout (the
    default) the update runs first; then, every --guidance-interval updates, a guidance
    sample (sample(): a deterministic function of the batch number and --seed, so a resume
    draws the same ones) is run forward and backward at the updated parameters, its
    gradient folded into the hypergradient as the backward produces it, and the token-mean
    hypergradient (all-reduced over workers: K scalars, not a gradient) takes one meta-Adam
    step. With --guidance-source train, the next training batch's gradient differentiates
    the previous update instead, before this update. The learned values, their
    hypergradients and the guidance loss are logged through fairseq.metrics.
    """

    def __init__(self, task, cfg):
        self.task = task
        self.cfg = cfg
        self._batches = None  # GuidanceBatches, built at the first meta step
        self._cached = (None, None)  # (batch number, sample on device)
        self._epoch = 1
        self._bound = (None, None)  # (fairseq optimizer, the guided one inside it)

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

    # -- the guided optimizer ------------------------------------------------------------
    def bind(self, optimizer):
        """The guided fairseq optimizer inside `optimizer`, set up for this task the first
        time it is seen: a stock optimizer is refused, a flat --fp16 layout checked."""
        if self._bound[0] is optimizer:
            return self._bound[1]
        shell = find_guided(optimizer)
        if shell is None:
            raise ValueError(f"--task guided_*: --optimizer {type(optimizer).__name__} learns nothing; "
                             f"use guided_adam, guided_lamb or guided_adafactor (with no "
                             f"--guided-hparams they behave as their stock twins)")
        if shell.flat_views is not None:
            check_views_match(shell.flat_views, optimizer.fp16_params, type(optimizer).__name__)
        # Train-batch guidance differentiates an update when the next gradient arrives, so
        # the step must keep the gradient it used (only if something is learned). fairseq
        # builds the optimizer from the optimizer's config alone: the task's
        # --guidance-source reaches it here.
        shell.guided.keep_step_grad = self.cfg.guidance_source == "train" and bool(shell.guided.learned.names)
        self._bound = (optimizer, shell)
        return shell

    # -- the meta step ---------------------------------------------------------------------
    def optimizer_step(self, optimizer, model, update_num: int) -> None:
        shell = self.bind(optimizer)
        guided = shell.guided
        is_meta_step = update_num % self.cfg.guidance_interval == 0 and guided.learned.names
        if self.cfg.guidance_source == "train":
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
                    self._heldout_meta_step(shell, optimizer, model, update_num)
                self._time_guidance_pass(optimizer, model, update_num)
            elif is_meta_step:
                self._heldout_meta_step(shell, optimizer, model, update_num)
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

    def _heldout_meta_step(self, shell, optimizer, model, update_num):
        guided = shell.guided
        module = unwrap_model(model)  # a DDP wrapper would all-reduce: skip it
        parts = self.sample(module, update_num, next(module.parameters()).device)
        params = [p for p in module.parameters() if p.requires_grad]
        slots = master_slots(optimizer, guided, params, shell.flat_views)
        if not slots:
            raise RuntimeError("cannot find the tensors the guided optimizer updated for this "
                               f"model under {type(optimizer).__name__}")
        scale = guidance_loss_scale(optimizer)
        rows = guided.hypergradient_rows()
        try:
            loss_sum, ntokens = fold_guidance_gradients(model, parts, params, slots, rows, scale,
                                                        guidance_autocast(optimizer),
                                                        self.task.target_dictionary.pad())
        except torch.OutOfMemoryError as e:
            raise RuntimeError(
                f"a part of the guidance batch ({max(int(p['ntokens']) for p in parts)} target tokens) "
                f"does not fit in memory at update {update_num + 1}: lower "
                f"--guidance-max-tokens / --guidance-batch-size") from e
        # K values, or K x groups with --guided-groups: flat for the one reduction
        hypergrad_sum = rows.total().reshape(-1) / scale
        self._apply(guided, self._token_mean_over_workers(guided, hypergrad_sum, loss_sum, ntokens))

    @staticmethod
    def _token_mean_over_workers(guided, hypergrad_sum, loss_sum, ntokens):
        """The hypergradient per guidance token over all workers' shares (logging the
        guidance loss, in bits per token, on the way)."""
        device = guided.learned.device
        k = guided.learned.raw.numel()
        raw = guided.learned.raw.reshape(-1)
        stats = torch.cat([hypergrad_sum,
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
        return (stats[:k] / ntok).reshape(guided.learned.shape)

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
        module = unwrap_model(model)
        parts = self.sample(module, update_num, next(module.parameters()).device)
        params = [p for p in module.parameters() if p.requires_grad]
        with self._timed("guide_pass_ms", model):
            drop_guidance_gradients(model, parts, params, guidance_loss_scale(optimizer),
                                    guidance_autocast(optimizer), self.task.target_dictionary.pad())

    # -- logs ------------------------------------------------------------------------------
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
