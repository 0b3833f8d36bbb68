"""Table 1's paired comparisons (guided_recipes.tables.compare) on hand-made outputs of
three seeds, checked against `sacrebleu --paired-bs` run here on files this test pools
itself: every seed's variant outputs against the same seed's base outputs."""
import json
import random
import subprocess

import pytest

from conftest import BIN, ENV
from guided_recipes.report import tables

SEEDS = (1, 2, 3)
WORDS = [f"w{i}" for i in range(60)]


def write_runs(root, sentences=40):
    """refs, and per seed a base run and a variant run whose outputs are the base's with
    one wrong word of some sentences set right: on every sentence of every seed the
    variant is at least as good as base of the same seed, but not as good as base of
    another seed where that seed's base is right and this one's is wrong."""
    rng = random.Random(0)
    refs = [[rng.choice(WORDS) for _ in range(8)] for _ in range(sentences)]
    raw = root / "raw"
    raw.mkdir()
    (raw / "test.en").write_text("\n".join(" ".join(r) for r in refs) + "\n")
    runs = {"base": {}, "beta1": {}}
    for seed in SEEDS:
        base, variant = [], []
        for ref in refs:
            wrong = rng.sample(range(8), rng.choice([0, 1, 3, 5, 6]))
            hyp = [f"x{rng.randrange(9)}" if i in wrong else w for i, w in enumerate(ref)]
            base.append(hyp)
            fixed = list(hyp)
            if wrong and rng.random() < 0.3:
                fixed[wrong[0]] = ref[wrong[0]]
            variant.append(fixed)
        for name, hyps in (("base", base), ("beta1", variant)):
            run = root / f"{name}-seed{seed}"
            run.mkdir()
            (run / "test.hyp.en").write_text("\n".join(" ".join(h) for h in hyps) + "\n")
            runs[name][seed] = (None, run)  # compare() reads only the outputs and the folder
    return raw, runs


def sacrebleu_paired_bs(refs, base, system, folder):
    for name, lines in (("refs", refs), ("base", base), ("system", system)):
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    out = subprocess.run([str(BIN / "sacrebleu"), str(folder / "refs.txt"), "-i", str(folder / "base.txt"),
                          str(folder / "system.txt"), "-m", "bleu", "--paired-bs", "-f", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    return rows[0]["BLEU"]["score"], rows[1]["BLEU"]["score"], rows[1]["BLEU"]["p_value"]


def test_pooled_bootstrap_pairs_each_seeds_outputs_with_the_same_seeds_base(tmp_path):
    raw, runs = write_runs(tmp_path)
    for name in runs:  # the per-seed deltas come from the run scores: any numbers do
        runs[name] = {s: (10.0 * s + (name == "beta1"), run) for s, (_, run) in runs[name].items()}
    got = tables.compare(runs["base"], runs["beta1"], raw, "test", "en")
    assert got["seeds"] == list(SEEDS)

    def hyps(name, seeds):
        return [line for s in seeds for line in (runs[name][s][1] / "test.hyp.en").read_text().splitlines()]

    refs = (raw / "test.en").read_text().splitlines() * len(SEEDS)
    (tmp_path / "paired").mkdir()
    base_bleu, system_bleu, p = sacrebleu_paired_bs(refs, hyps("base", SEEDS), hyps("beta1", SEEDS),
                                                    tmp_path / "paired")
    assert got["pooled"]["baseline"] == pytest.approx(base_bleu, abs=0.01)
    assert got["pooled"]["system"] == pytest.approx(system_bleu, abs=0.01)
    assert got["pooled"]["delta"] == pytest.approx(system_bleu - base_bleu, abs=0.02)
    assert got["pooled"]["p"] == pytest.approx(p) and p < 0.01  # a consistent gain on every sentence
    # the same outputs paired across seeds (seed 1's variant with seed 3's base, ...) keep
    # both BLEU scores but not the p-value: the test above must tell them apart
    (tmp_path / "crossed").mkdir()
    crossed = sacrebleu_paired_bs(refs, hyps("base", SEEDS[::-1]), hyps("beta1", SEEDS), tmp_path / "crossed")
    assert crossed[:2] == pytest.approx((base_bleu, system_bleu), abs=0.01) and crossed[2] > 0.05
