"""The guidance batch sequence: by default a uniform random sample of the guide split
across lengths, fixed by --seed, the same after a resume and split without overlap
between data-parallel ranks; --guidance-batching bucketed keeps fairseq's length buckets."""
import numpy as np
import pytest
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from conftest import PLUGIN, TINY_MODEL


def build(data, *flags):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", PLUGIN, "--task", "guided_translation",
                                                *TINY_MODEL, "--optimizer", "guided_adam",
                                                "--guidance-max-tokens", "120", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    from fairseq_guided.guidance.batches import GuidanceBatches

    return GuidanceBatches(task, cfg.task, model)


def lengths(batches, indices):
    return batches.dataset.num_tokens_vec(np.asarray(indices))


def test_default_batch_spans_the_length_range_of_the_split(tiny_corpus):
    batches = build(tiny_corpus, "--seed", "3")
    all_lengths = batches.sizes
    low, high = np.percentile(all_lengths, [20, 80])
    for position in range(3):
        got = lengths(batches, batches.at(position))
        assert len(got) >= 8 and got.sum() <= 120  # the budget counts real tokens
        assert got.min() <= low and got.max() >= high, (got, low, high)
        parts = batches.parts(batches.at(position))
        assert sorted(np.concatenate(parts).tolist()) == sorted(batches.at(position).tolist())
        for part in parts:  # each part fits the budget padded, as fairseq counts it
            assert lengths(batches, part).max() * len(part) <= 120
    bucketed = build(tiny_corpus, "--seed", "3", "--guidance-batching", "bucketed")
    spans = [np.ptp(lengths(bucketed, bucketed.at(k))) for k in range(5)]
    assert max(spans) <= 1 < np.ptp(lengths(batches, batches.at(0)))  # one length a bucket


def test_sequence_is_fixed_by_the_seed_and_survives_a_resume(tiny_corpus):
    first = build(tiny_corpus, "--seed", "3")
    walked = [first.at(k).tolist() for k in range(40)]  # several passes over 100 examples
    resumed = build(tiny_corpus, "--seed", "3")
    assert [resumed.at(k).tolist() for k in (37, 5, 22)] == [walked[37], walked[5], walked[22]]
    assert build(tiny_corpus, "--seed", "4").at(0).tolist() != walked[0]


def test_each_pass_covers_the_split_once_and_ranks_never_share_a_batch(tiny_corpus):
    batches = build(tiny_corpus, "--seed", "3")
    one_pass = batches.pass_batches(0)
    seen = np.concatenate(one_pass)
    assert sorted(seen.tolist()) == sorted(batches.indices.tolist())
    world = 2
    for j in range(len(one_pass) // world):
        shards = [set(batches.at(j * world + rank).tolist()) for rank in range(world)]
        assert shards[0] and shards[1] and not shards[0] & shards[1]


@pytest.mark.parametrize("batching", ["random", "bucketed"])
def test_every_pass_over_the_split_is_in_a_new_order(tiny_corpus, batching):
    """A run of more updates than the split has batches cycles it pass after pass: each pass
    is a new order (random: new samples; bucketed: the buckets in a new order), and the
    sequence runs from one pass straight into the next."""
    batches = build(tiny_corpus, "--seed", "3", "--guidance-batching", batching)
    passes = [[tuple(sorted(b.tolist())) for b in batches.pass_batches(n)] for n in range(3)]
    for one_pass in passes:
        assert sorted(i for b in one_pass for i in b) == sorted(batches.indices.tolist())
    assert len(passes[0]) >= 5
    if batching == "random":  # a new permutation cuts new samples: no batch comes back
        for a in range(3):
            for b in range(a + 1, 3):
                assert not set(passes[a]) & set(passes[b]), (a, b)
    else:  # the same buckets, in another order each pass
        assert sorted(passes[0]) == sorted(passes[1]) == sorted(passes[2])
        assert passes[0] != passes[1] and passes[1] != passes[2] and passes[0] != passes[2]
    walked = [tuple(sorted(batches.at(k).tolist())) for k in range(sum(len(p) for p in passes))]
    assert walked == passes[0] + passes[1] + passes[2]


@pytest.mark.parametrize("flag,value", [("--guidance-max-tokens", "2")])
def test_a_batch_size_below_every_example_is_refused_naming_the_flag(tiny_corpus, flag, value):
    with pytest.raises(ValueError, match=flag):
        build(tiny_corpus, flag, value)
