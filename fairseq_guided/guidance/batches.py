"""The sequence of guidance batches over the held-out split.

Position k of the sequence is a deterministic function of k and the seed: the split is
cycled pass after pass, each pass in a new order, so a resumed run (or another worker)
finds the same batch at the same position without saving an iterator. A worker of rank r
among W takes position j * W + r for guidance batch j.

random (the default): each pass is a random permutation of the split, cut in that order
into samples of up to --guidance-max-tokens tokens (unpadded), so every guidance batch is
a uniform sample of the split across lengths (the paper guides with a held-out sample of
the training data). A sample of mixed lengths would mostly be padding in one tensor, so
it runs as a few length-sorted parts, each within the token budget padded, whose
gradients add up (parts()). bucketed: fairseq's length-sorted batches, each pass in a new
order (one part, little padding, but one batch holds sentences of one length).
"""
import logging

import numpy as np
from fairseq import utils
from fairseq.data import data_utils

logger = logging.getLogger(__name__)


class GuidanceBatches:
    def __init__(self, task, cfg, model):
        subset = cfg.guidance_subset
        if subset not in task.datasets:
            task.load_dataset(subset, combine=False, epoch=1)
        self.dataset = dataset = task.dataset(subset)
        self.cfg = cfg
        self.max_tokens = cfg.guidance_max_tokens or (None if cfg.guidance_batch_size else cfg.train_max_tokens)
        self.max_sentences = cfg.guidance_batch_size or (None if cfg.guidance_max_tokens else cfg.train_batch_size)
        max_positions = utils.resolve_max_positions(task.max_positions(), model.max_positions())
        indices, _ = dataset.filter_indices_by_size(np.arange(len(dataset), dtype=np.int64), max_positions)
        if len(indices) == 0:
            raise ValueError(f"--guidance-subset {subset!r} has no example that fits the model's "
                             f"max positions {max_positions}; nothing to guide with")
        sizes = dataset.num_tokens_vec(indices)
        if self.max_tokens is not None and sizes.max() > self.max_tokens:
            # the guided task refuses this at setup (config.check_guidance_fits); kept for
            # direct use of this class
            raise ValueError(f"--guidance-max-tokens {self.max_tokens} is smaller than the longest "
                             f"example of --guidance-subset {subset!r} ({int(sizes.max())} tokens)")
        self.indices, self.sizes = indices, sizes
        self._pass_cache = {}  # pass number -> its batches (only the latest is kept)
        self._counts = []  # number of batches in each pass so far
        if cfg.guidance_batching == "bucketed":
            by_length = indices[np.argsort(sizes, kind="mergesort")]
            self._bucketed = self._pack(by_length)

    def _samples(self, ordered):
        """Consecutive runs of `ordered` of up to max_tokens real tokens (and max_sentences)."""
        sizes = self.dataset.num_tokens_vec(ordered)
        samples, start, total = [], 0, 0
        for i, size in enumerate(sizes):
            full = (self.max_tokens is not None and total + size > self.max_tokens) or \
                   (self.max_sentences is not None and i - start >= self.max_sentences)
            if full and i > start:
                samples.append(ordered[start:i])
                start, total = i, 0
            total += size
        samples.append(ordered[start:])
        return samples

    def parts(self, indices):
        """A sample as length-sorted batches that each fit the budget padded."""
        if self.cfg.guidance_batching == "bucketed":
            return [indices]
        by_length = indices[np.argsort(self.dataset.num_tokens_vec(indices), kind="mergesort")]
        return self._pack(by_length)

    def _pack(self, ordered):
        return [b for b in data_utils.batch_by_size(
            ordered.astype(np.int64), self.dataset.num_tokens,
            num_tokens_vec=self.dataset.num_tokens_vec(ordered).astype(np.int64),
            max_tokens=self.max_tokens, max_sentences=self.max_sentences) if len(b) > 0]

    def pass_batches(self, number: int):
        """The batches of pass `number` over the split, in the order they are used."""
        if number not in self._pass_cache:
            seed = [int(self.cfg.seed) % 2 ** 32, number]
            if self.cfg.guidance_batching == "bucketed":
                order = np.random.RandomState(seed).permutation(len(self._bucketed))
                batches = [self._bucketed[i] for i in order]
            else:
                batches = self._samples(np.random.RandomState(seed).permutation(self.indices))
            self._pass_cache = {number: batches}
        return self._pass_cache[number]

    def at(self, position: int):
        """The indices of the batch at `position` of the endless sequence."""
        number = 0
        while True:
            if number == len(self._counts):
                self._counts.append(len(self.pass_batches(number)))
            if position < self._counts[number]:
                return self.pass_batches(number)[position]
            position -= self._counts[number]
            number += 1

    def log_first(self, indices, samples) -> None:
        lengths = self.sizes[np.isin(self.indices, indices)]
        logger.info(
            f"guidance batch: {sum(s['nsentences'] for s in samples)} sentences, "
            f"{sum(int(s['ntokens']) for s in samples)} target tokens in {len(samples)} part(s), "
            f"lengths {int(lengths.min())}-{int(lengths.max())} of the split's "
            f"{int(self.sizes.min())}-{int(self.sizes.max())} ({len(self.indices)} examples of "
            f"{self.cfg.guidance_subset!r}); batching={self.cfg.guidance_batching}, "
            f"refresh={self.cfg.guidance_refresh}, interval={self.cfg.guidance_interval}")
