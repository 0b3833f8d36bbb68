"""T5's span-corruption objective as pure numpy (no fairseq, no torch).

Follows the definitions of T5's reference preprocessing (Raffel et al. 2020, section 3.1.4;
`random_spans_noise_mask`, `noise_span_to_unique_sentinel`, `random_spans_helper`):

- a sequence of L tokens gets N = round(L x density) noised tokens (at least 1, at most L-1,
  with L taken as at least 2) in S = round(N / mean_span) spans (at least 1);
- the N noise tokens and the L-N kept tokens are each cut into S non-empty runs, uniformly at
  random over all such cuttings, and interleaved kept, noise, kept, noise, ... so the text
  always starts with kept tokens and (for L >= 2) ends with a noise span;
- inputs = the text with each noise span replaced by one sentinel, sentinel k for the k-th
  span; targets = the text with each *kept* run replaced by a sentinel, so targets read
  "<s0> span0 <s1> span1 ...". A final sentinel appears in targets only when the text ends
  with kept tokens (a 1-token text). End-of-sentence is the caller's to append.

One difference: when S exceeds the number of kept tokens (density near 1, e.g. > 0.75 with
mean span 3), T5's reference cannot cut the kept tokens into S runs and fails. Here S is
lowered to the number of kept tokens instead, so the spans get longer than the setting;
`check_settings` refuses such settings up front, where a task validates its flags (near
the limit, rounding can still lower S by one on short texts).
"""
from typing import Sequence, Tuple

import numpy as np


def check_settings(noise_density: float, mean_noise_span_length: float) -> None:
    """Refuse settings that cannot be met: density must be in (0, 1), span length >= 1,
    and there must be a kept token to separate every pair of noise spans."""
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1); got {noise_density}")
    if not mean_noise_span_length >= 1.0:
        raise ValueError(f"mean_noise_span_length must be >= 1; got {mean_noise_span_length}")
    # spans per token (density / mean) must not exceed kept tokens per token (1 - density)
    limit = mean_noise_span_length / (mean_noise_span_length + 1.0)
    if noise_density > limit:
        raise ValueError(
            f"noise_density {noise_density} with mean_noise_span_length {mean_noise_span_length} "
            f"asks for more noise spans than kept tokens to separate them; use a density <= "
            f"{limit:.4f} or a longer mean span")


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> Tuple[int, int]:
    """(noise tokens, noise spans) for a text of `length` tokens; a function of length only,
    so corrupted lengths are known without drawing a mask."""
    length = max(length, 2)  # T5: avoid degenerate masks on 0- and 1-token texts
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    return num_noise, min(num_spans, length - num_noise)  # see the module docstring


def corrupted_lengths(length: int, noise_density: float, mean_noise_span_length: float) -> Tuple[int, int]:
    """(input tokens, target tokens) after corruption, end-of-sentence not counted."""
    if length <= 1:  # nothing noised: inputs = the text, targets = one sentinel if any text
        return length, length
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    return length - num_noise + num_spans, num_noise + num_spans


def raw_length_for_inputs(inputs_length: int, noise_density: float, mean_noise_span_length: float) -> int:
    """The longest text whose corrupted input, plus end-of-sentence, fits `inputs_length`
    (T5's random_spans_helper: inputs 512 -> 568 raw tokens at density 0.15, span 3)."""
    if inputs_length < 2:
        raise ValueError(f"inputs_length must be >= 2; got {inputs_length}")
    raw = 1
    while corrupted_lengths(raw + 1, noise_density, mean_noise_span_length)[0] + 1 <= inputs_length:
        raw += 1
    return raw


def _random_cut(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of `num_segments` non-empty runs summing to `num_items`, each such cutting
    equally likely (T5 shuffles an indicator of segment starts; choosing the cut points
    without replacement draws from the same distribution)."""
    cuts = np.sort(rng.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
    return np.diff(np.concatenate([[0], cuts, [num_items]]))


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over `length` tokens, True = noise (dropped from inputs, predicted)."""
    if length < 0:
        raise ValueError(f"length must be >= 0; got {length}")
    if not 0.0 < noise_density < 1.0:  # T5 would still noise one token at density 0
        raise ValueError(f"noise_density must be in (0, 1); got {noise_density}")
    if not mean_noise_span_length >= 1.0:
        raise ValueError(f"mean_noise_span_length must be >= 1; got {mean_noise_span_length}")
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    padded = max(length, 2)
    noise_lengths = _random_cut(num_noise, num_spans, rng)
    kept_lengths = _random_cut(padded - num_noise, num_spans, rng)
    run_lengths = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise_run = np.tile([False, True], num_spans)
    return np.repeat(is_noise_run, run_lengths)[:length]


def _runs_to_sentinels(tokens: np.ndarray, mask: np.ndarray, sentinel_ids: Sequence[int]) -> np.ndarray:
    """Each run of masked tokens replaced by the next sentinel (k-th run -> sentinel_ids[k])."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    num_runs = int(starts.sum())
    if num_runs > len(sentinel_ids):
        raise ValueError(f"{num_runs} spans need {num_runs} sentinels; only {len(sentinel_ids)} given")
    out = tokens.copy()
    out[starts] = np.asarray(sentinel_ids, dtype=tokens.dtype)[:num_runs]
    keep = ~mask | starts
    return out[keep]


def corrupt(tokens: np.ndarray, noise_mask: np.ndarray,
            sentinel_ids: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(inputs, targets): noise spans -> sentinels in the inputs; kept runs -> sentinels in
    the targets, which so read sentinel k followed by the k-th dropped span."""
    tokens = np.asarray(tokens)
    noise_mask = np.asarray(noise_mask, dtype=bool)
    if tokens.shape != noise_mask.shape or tokens.ndim != 1:
        raise ValueError(f"tokens {tokens.shape} and noise_mask {noise_mask.shape} must be equal 1-d shapes")
    return (_runs_to_sentinels(tokens, noise_mask, sentinel_ids),
            _runs_to_sentinels(tokens, ~noise_mask, sentinel_ids))


def merge(inputs: Sequence[int], targets: Sequence[int], sentinel_ids: Sequence[int]) -> np.ndarray:
    """The original text back from (inputs, targets): each sentinel of the inputs replaced by
    what follows the same sentinel in the targets, up to the next sentinel."""
    position = {int(s): k for k, s in enumerate(sentinel_ids)}
    spans, current = {}, None
    for token in targets:
        if int(token) in position:
            current = position[int(token)]
            spans[current] = []
        elif current is None:
            raise ValueError("targets must start with a sentinel")
        else:
            spans[current].append(int(token))
    merged = []
    for token in inputs:
        k = position.get(int(token))
        merged.extend([int(token)] if k is None else spans.get(k, []))
    return np.asarray(merged, dtype=np.int64)
