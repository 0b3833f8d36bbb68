"""T5 span corruption (fairseq_guided/data/span_corruption.py) on real English text: the
achieved noise density and span lengths, sentinels, exact reconstruction, edge cases."""
import re

import numpy as np
import pytest

from fairseq_guided.data import span_corruption as sc

# Lincoln's Gettysburg Address (Bliss copy, public domain): real English, ~300 tokens
GETTYSBURG = """Four score and seven years ago our fathers brought forth on this continent, a new
nation, conceived in Liberty, and dedicated to the proposition that all men are created equal.
Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived
and so dedicated, can long endure. We are met on a great battle-field of that war. We have come
to dedicate a portion of that field, as a final resting place for those who here gave their
lives that that nation might live. It is altogether fitting and proper that we should do this.
But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this
ground. The brave men, living and dead, who struggled here, have consecrated it, far above our
poor power to add or detract. The world will little note, nor long remember what we say here,
but it can never forget what they did here. It is for us the living, rather, to be dedicated
here to the unfinished work which they who fought here have thus far so nobly advanced. It is
rather for us to be here dedicated to the great task remaining before us -- that from these
honored dead we take increased devotion to that cause for which they gave the last full measure
of devotion -- that we here highly resolve that these dead shall not have died in vain -- that
this nation, under God, shall have a new birth of freedom -- and that government of the people,
by the people, for the people, shall not perish from the earth."""

WORDS = re.findall(r"\w+|[^\w\s]", GETTYSBURG)
VOCAB = {w: i for i, w in enumerate(sorted(set(WORDS)), start=10)}
TEXT = np.array([VOCAB[w] for w in WORDS], dtype=np.int64)
SENTINELS = list(range(10_000, 10_100))  # ids no word has


def windows(length, count, rng):
    """`count` windows of `length` tokens of the address, at random offsets."""
    starts = rng.integers(0, len(TEXT) - length + 1, size=count)
    return [TEXT[s:s + length] for s in starts]


def test_text_is_long_enough():
    assert len(TEXT) > 300, len(TEXT)


@pytest.mark.parametrize("density,span", [(0.15, 3.0), (0.3, 5.0), (0.5, 2.0)], ids=str)
def test_achieved_density_and_span_length(density, span):
    rng = np.random.default_rng(0)
    noise_tokens = span_count = total = 0
    span_lengths = []
    position_noise = np.zeros(256)
    for tokens in windows(256, 400, rng):
        mask = sc.random_spans_noise_mask(len(tokens), density, span, rng)
        starts = np.flatnonzero(mask & ~np.r_[False, mask[:-1]])
        ends = np.flatnonzero(mask & ~np.r_[mask[1:], False])
        span_lengths += list(ends - starts + 1)
        noise_tokens += mask.sum()
        span_count += len(starts)
        total += len(tokens)
        position_noise += mask
    achieved_density = noise_tokens / total
    achieved_span = noise_tokens / span_count
    print(f"density {density} span {span}: achieved density {achieved_density:.4f}, "
          f"mean span {achieved_span:.3f}, span-length sd {np.std(span_lengths):.2f}")
    assert abs(achieved_density - density) <= 1 / 256
    assert abs(achieved_span - span) <= 0.1 * span
    # where noise falls is uniform away from the ends (T5: text starts kept, ends noised)
    middle = position_noise[20:-20] / 400
    assert abs(middle.mean() - density) < 0.02 and middle.max() - middle.min() < 0.25


def test_counts_are_t5s():
    # round(L x density) noise tokens in round(N / mean span) spans, as T5 computes them
    assert sc.noise_counts(568, 0.15, 3.0) == (85, 28)
    assert sc.noise_counts(100, 0.15, 3.0) == (15, 5)
    # T5's random_spans_helper: inputs of 512 come from 568 tokens, with targets of 114
    raw = sc.raw_length_for_inputs(512, 0.15, 3.0)
    inputs, targets = sc.corrupted_lengths(raw, 0.15, 3.0)
    assert (raw, inputs + 1, targets + 1) == (568, 512, 114)


def test_sentinels_distinct_in_order_and_merge_reconstructs():
    rng = np.random.default_rng(1)
    for length in (5, 17, 64, 200, len(TEXT)):
        for tokens in windows(length, 50, rng):
            mask = sc.random_spans_noise_mask(length, 0.15, 3.0, rng)
            inputs, targets = sc.corrupt(tokens, mask, SENTINELS)
            in_sentinels = [t for t in inputs if t in SENTINELS]
            out_sentinels = [t for t in targets if t in SENTINELS]
            spans = sc.noise_counts(length, 0.15, 3.0)[1]
            assert in_sentinels == SENTINELS[:spans] == out_sentinels
            assert targets[0] == SENTINELS[0] and inputs[0] != SENTINELS[0]
            assert (len(inputs), len(targets)) == sc.corrupted_lengths(length, 0.15, 3.0)
            np.testing.assert_array_equal(sc.merge(inputs, targets, SENTINELS), tokens)
    # the targets read sentinel k, then the k-th dropped span
    mask = np.zeros(10, dtype=bool)
    mask[[2, 3, 7]] = True
    inputs, targets = sc.corrupt(TEXT[:10], mask, SENTINELS)
    assert list(inputs) == [*TEXT[:2], SENTINELS[0], *TEXT[4:7], SENTINELS[1], *TEXT[8:10]]
    assert list(targets) == [SENTINELS[0], *TEXT[2:4], SENTINELS[1], TEXT[7], SENTINELS[2]]


def test_same_generator_state_same_mask():
    a = sc.random_spans_noise_mask(128, 0.15, 3.0, np.random.default_rng([1, 2, 3]))
    b = sc.random_spans_noise_mask(128, 0.15, 3.0, np.random.default_rng([1, 2, 3]))
    c = sc.random_spans_noise_mask(128, 0.15, 3.0, np.random.default_rng([1, 3, 3]))
    assert (a == b).all() and not (a == c).all()


def test_very_short_texts():
    rng = np.random.default_rng(2)
    assert sc.random_spans_noise_mask(0, 0.15, 3.0, rng).shape == (0,)
    assert [len(x) for x in sc.corrupt(TEXT[:0], np.zeros(0, bool), SENTINELS)] == [0, 0]
    assert sc.corrupted_lengths(0, 0.15, 3.0) == (0, 0) and sc.corrupted_lengths(1, 0.15, 3.0) == (1, 1)
    # one token: nothing to noise; targets are one sentinel (T5 pads the length to 2)
    assert list(sc.random_spans_noise_mask(1, 0.15, 3.0, rng)) == [False]
    inputs, targets = sc.corrupt(TEXT[:1], np.array([False]), SENTINELS)
    assert list(inputs) == [TEXT[0]] and list(targets) == [SENTINELS[0]]
    # two and three tokens: one kept run, then one noised token
    assert list(sc.random_spans_noise_mask(2, 0.15, 3.0, rng)) == [False, True]
    assert list(sc.random_spans_noise_mask(3, 0.15, 3.0, rng)) == [False, False, True]


def test_density_zero_and_out_of_range_fail_clearly():
    rng = np.random.default_rng(3)
    for density in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="noise_density must be in"):
            sc.random_spans_noise_mask(50, density, 3.0, rng)
        with pytest.raises(ValueError, match="noise_density must be in"):
            sc.check_settings(density, 3.0)
    with pytest.raises(ValueError, match="mean_noise_span_length must be >= 1"):
        sc.random_spans_noise_mask(50, 0.15, 0.5, rng)


def test_density_near_one():
    rng = np.random.default_rng(4)
    # 0.75 is the most that mean span 3 allows: every span still has a kept token before it
    sc.check_settings(0.75, 3.0)
    for tokens in windows(120, 50, rng):
        mask = sc.random_spans_noise_mask(120, 0.75, 3.0, rng)
        assert mask.sum() == 90 and (mask & ~np.r_[False, mask[:-1]]).sum() == 30
        np.testing.assert_array_equal(sc.merge(*sc.corrupt(tokens, mask, SENTINELS), SENTINELS), tokens)
    # beyond it the settings are refused; the mask, if drawn anyway, has fewer, longer spans
    with pytest.raises(ValueError, match="more noise spans than kept tokens"):
        sc.check_settings(0.95, 3.0)
    mask = sc.random_spans_noise_mask(100, 0.95, 3.0, rng)
    assert mask.sum() == 95 and (mask & ~np.r_[False, mask[:-1]]).sum() == 5
    tokens = TEXT[:100]
    np.testing.assert_array_equal(sc.merge(*sc.corrupt(tokens, mask, SENTINELS), SENTINELS), tokens)


def test_too_few_sentinels_fail_clearly():
    mask = sc.random_spans_noise_mask(200, 0.15, 3.0, np.random.default_rng(5))
    with pytest.raises(ValueError, match="10 spans need 10 sentinels; only 4 given"):
        sc.corrupt(TEXT[:200], mask, SENTINELS[:4])
