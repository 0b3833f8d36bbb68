"""A fairseq dataset of span-corrupted blocks of monolingual text (T5's pretraining input).

Wraps a block dataset (fairseq's TokenBlockDataset over an indexed monolingual split) and
corrupts each block on the fly with the math of span_corruption.py. The noise of item i in
epoch e is drawn from a generator seeded by (seed, e, i): the same for any worker count,
order or resume, and different in every epoch. Corrupted lengths are a function of the
block length only, so batches are planned without drawing a mask.
"""
import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils
from fairseq.data.language_pair_dataset import collate

from . import span_corruption


class SpanCorruptionDataset(FairseqDataset):
    def __init__(self, blocks, dictionary, sentinel_ids, noise_density, mean_noise_span_length,
                 seed, shuffle=True, vary_with_epoch=True):
        self.blocks = blocks
        self.dictionary = dictionary
        self.sentinel_ids = list(sentinel_ids)
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.seed = seed
        self.shuffle = shuffle
        # held-out splits keep epoch 1's noise, so their losses compare across epochs
        self.vary_with_epoch = vary_with_epoch
        self.epoch = 1
        lengths = np.asarray(blocks.sizes)
        by_length = {n: span_corruption.corrupted_lengths(int(n), noise_density, mean_noise_span_length)
                     for n in np.unique(lengths)}
        # + 1: the end-of-sentence appended to both sides
        self.src_sizes = np.array([by_length[n][0] + 1 for n in lengths], dtype=np.int64)
        self.tgt_sizes = np.array([by_length[n][1] + 1 for n in lengths], dtype=np.int64)

    def set_epoch(self, epoch):
        if self.vary_with_epoch:
            self.epoch = epoch

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, index):
        tokens = self.blocks[index].numpy()
        rng = np.random.default_rng([self.seed, self.epoch, index])
        mask = span_corruption.random_spans_noise_mask(len(tokens), self.noise_density,
                                                       self.mean_noise_span_length, rng)
        inputs, targets = span_corruption.corrupt(tokens, mask, self.sentinel_ids)
        eos = [self.dictionary.eos()]
        return {"id": index,
                "source": torch.from_numpy(np.concatenate([inputs, eos]).astype(np.int64)),
                "target": torch.from_numpy(np.concatenate([targets, eos]).astype(np.int64))}

    def collater(self, samples):
        # fairseq's translation batching: right-padded source and target, and
        # prev_output_tokens = the target shifted right behind an end-of-sentence
        return collate(samples, self.dictionary.pad(), self.dictionary.eos(),
                       left_pad_source=False, left_pad_target=False)

    @property
    def sizes(self):
        return self.src_sizes

    def num_tokens(self, index):
        return max(self.src_sizes[index], self.tgt_sizes[index])

    def num_tokens_vec(self, indices):
        return np.maximum(self.src_sizes[indices], self.tgt_sizes[indices])

    def size(self, index):
        return (self.src_sizes[index], self.tgt_sizes[index])

    def ordered_indices(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self))
        else:
            order = np.arange(len(self))
        return order[np.argsort(self.src_sizes[order], kind="mergesort")]

    def filter_indices_by_size(self, indices, max_sizes):
        return data_utils.filter_paired_dataset_indices_by_size(
            self.src_sizes, self.tgt_sizes, indices, max_sizes)

    @property
    def supports_prefetch(self):
        return False
