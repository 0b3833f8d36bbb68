"""Statistics of the report: seed spread with a t interval, and sacrebleu's paired
bootstrap (the `sacrebleu --paired-bs` test, through its Python API) between two systems.

Two kinds of noise, kept apart:
  seed noise      runs differ by their seed; measured by the spread of per-seed BLEU
                  (mean_ci) and of the per-seed paired differences (the same seed of base
                  and variant share data order and initialisation);
  test-set noise  a finite test set; measured by resampling its sentences
                  (paired_bootstrap, on one seed or on all seeds' outputs pooled).
"""
import math
import statistics

T_LEVEL = 0.95
BOOTSTRAP_SAMPLES = 1000  # sacrebleu's default for --paired-bs


def mean_ci(values, level=T_LEVEL):
    """{n, mean, sd, ci: [lo, hi] | None}: the sample sd (n-1) and the two-sided t interval
    mean +- t(level, n-1) * sd / sqrt(n); no interval from one value."""
    from scipy.stats import t

    values = [float(v) for v in values]
    n = len(values)
    mean = statistics.mean(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci": None}
    sd = statistics.stdev(values)
    half = t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci": [float(mean - half), float(mean + half)]}


def paired_bootstrap(baseline, system, references, samples=BOOTSTRAP_SAMPLES):
    """sacrebleu's paired bootstrap of `system` against `baseline` (lists of detokenized
    sentences, aligned with `references`): {baseline, system, delta, p, samples}. p is
    sacrebleu's: the share of resampled |differences| (centred) above the observed one,
    with sacrebleu's fixed resampling seed (12345, $SACREBLEU_SEED), so it is reproducible;
    1 when the observed difference is exactly 0."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    if not (len(baseline) == len(system) == len(references)):
        raise ValueError(f"{len(baseline)} / {len(system)} hypotheses for {len(references)} references")
    test = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": BLEU()}, [references],
                      test_type="bs", n_samples=samples)
    _, scores = test()
    base, result = scores["BLEU"]
    delta = result.score - base.score
    # sacrebleu counts resampled differences strictly above the observed one: for an observed
    # difference of exactly 0 (e.g. identical outputs) that gives its smallest p, 1/(samples+1),
    # which would read as significant. No difference is no evidence of one: p = 1.
    p = 1.0 if delta == 0 else result.p_value
    return {"baseline": base.score, "system": result.score, "delta": delta, "p": p, "samples": samples}
