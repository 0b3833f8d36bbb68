"""The downstream report's numbers for guided_recipes/run/t5.py: accuracy of fairseq-generate's
output, the majority-class control, a 95% Wilson score interval for each accuracy, and an
exact McNemar test between two models scored on the same test snippets."""
import math
import re
from collections import Counter
from pathlib import Path

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes, n, z=Z95):
    """Wilson score interval for a binomial proportion (Wilson 1927). Unlike the normal
    approximation it stays inside [0, 1] and is sensible near 0 or 1 and for small n."""
    if n <= 0:
        raise ValueError("an interval needs at least one test example")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def scored(correct, n, hits=None):
    """An accuracy with its count and interval, as results.json stores it; hits (a string
    of 0/1 per test snippet, in test order) lets two runs be compared pairwise."""
    low, high = wilson_interval(correct, n)
    return {"accuracy": correct / n, "correct": correct, "n": n, "ci95": [low, high],
            **({"hits": hits} if hits is not None else {})}


def mcnemar_exact(hits_a, hits_b):
    """Two-sided exact McNemar test of two models on the same snippets: of the snippets
    exactly one model gets right, how unlikely is a split this uneven if both were equally
    good? Returns (a right only, b right only, p-value). Paired, so it sees a difference
    that two overlapping Wilson intervals can hide."""
    if len(hits_a) != len(hits_b):
        raise ValueError("McNemar compares two runs on the same test snippets")
    only_a = sum(a == "1" and b == "0" for a, b in zip(hits_a, hits_b))
    only_b = sum(a == "0" and b == "1" for a, b in zip(hits_a, hits_b))
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return only_a, only_b, min(1.0, 2 * tail)


def generated_pairs(output):
    """{index: (hypothesis, reference)} from fairseq-generate's H-/T- lines."""
    hyps, refs = {}, {}
    for line in output.splitlines():
        m = re.match(r"^([HT])-(\d+)\t(.*)$", line)
        if m:
            kind, idx, rest = m.groups()
            (hyps if kind == "H" else refs)[int(idx)] = rest.split("\t")[-1].strip()
    if not refs or set(hyps) != set(refs):
        raise ValueError(f"fairseq-generate printed {len(hyps)} hypotheses for {len(refs)} references")
    return {i: (hyps[i], refs[i]) for i in refs}


def generated_accuracy(output):
    """Exact-match accuracy of greedy outputs against the gold label words."""
    pairs = generated_pairs(output)
    hits = "".join("1" if h == r else "0" for _, (h, r) in sorted(pairs.items()))
    return scored(hits.count("1"), len(pairs), hits)


def _targets(sentiment_bin, split):
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    data = MMapIndexedDataset(str(Path(sentiment_bin) / f"{split}.src-tgt.tgt"))
    return [tuple(data[i].tolist()) for i in range(len(data))]


def n_test(sentiment_bin):
    """Snippets in the binarized test split."""
    return len(_targets(sentiment_bin, "test"))


def majority_control(sentiment_bin):
    """Accuracy on test of always answering the training split's most frequent label: the
    floor any fine-tuned model has to clear."""
    label, _ = Counter(_targets(sentiment_bin, "train")).most_common(1)[0]
    test = _targets(sentiment_bin, "test")
    return scored(sum(t == label for t in test), len(test))
