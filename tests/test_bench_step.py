"""user_scripts/bench_step.py runs end to end on the CPU and prints every optimizer's step
time, its ratio to stock adam and, for the learning ones, a finite hypergradient time."""
import re
import sys

import pytest

from conftest import REPO, run


def test_bench_step_prints_a_row_per_optimizer(tiny_corpus):
    out = run([sys.executable, REPO / "user_scripts" / "bench_step.py", "--device", "cpu",
               "--data", tiny_corpus, "--rounds", "7"])
    assert out.returncode == 0, out.stdout[-3000:]
    rows = {m[0]: m[1:] for m in re.findall(r"^\| (.+?) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]*) \|$",
                                            out.stdout, flags=re.M)}
    assert len(rows) == 7, out.stdout[-2000:]
    assert float(rows["stock adam"][1]) == 1.0
    learners = {name for name, (_, _, hyper) in rows.items() if hyper}
    assert learners == {"guided_adam alpha,beta1", "guided_adam alpha,beta1, per-tensor loop",
                        "guided_lamb alpha,beta1"}
    assert all(float(step) > 0 for step, _, _ in rows.values())
    assert "stock adam is fairseq.optim.adam.Adam" in out.stdout


def test_benchmark_prints_ratios_to_plain_fairseq(tiny_corpus, tmp_path):
    """user_scripts/benchmark.py as gpu_check.sh trims it: plain adam and one guided row,
    their ratio, the overhead beyond the guidance pass, and the targets it could check."""
    out = run([sys.executable, REPO / "user_scripts" / "benchmark.py", "--device", "cpu", "--data", tiny_corpus,
               "--updates", "8", "--warmup-updates", "2", "--log-interval", "2",
               "--configs", "^guided_lamb alpha,beta1$", "--out", tmp_path / "bench.md"])
    assert out.returncode == 0, out.stdout[-3000:]
    table = (tmp_path / "bench.md").read_text()
    rows = re.findall(r"^\| (plain adam|guided_lamb alpha,beta1) \| ([0-9.]+) \|", table, flags=re.M)
    assert [name for name, _ in rows] == ["plain adam", "guided_lamb alpha,beta1"], table
    assert float(rows[0][1]) > 0 and "not measured in this run" in table


def test_interleaved_ratios_cancel_a_slow_period():
    """The interleaved benchmark's arithmetic on made-up segment times: a machine twice as
    slow for a round disturbs the ratios of the rounds that touch it; the median over
    rounds holds the true ratio."""
    from guided_recipes.bench.interleaved import PLAIN, rows, schedule

    order = schedule([PLAIN, "a", "b"], 3)
    assert order == [(0, PLAIN), (0, "a"), (0, "b"), (1, PLAIN), (1, "b"), (1, "a"),
                     (2, PLAIN), (2, "a"), (2, "b"), (3, PLAIN)]
    slow = {2: 2.0}  # round 2 (its plain adam segment too) takes twice as long
    base = {PLAIN: 1.0, "a": 1.5, "b": 1.0}
    segments = [{"round": r, "config": n, "seconds": base[n] * slow.get(r, 1.0)}
                for r, n in schedule([PLAIN, "a", "b"], 5)]
    table = {row["config"]: row for row in rows(segments, 4)}
    assert table["a"]["segments"] == 5 and table["a"]["median"] == 1.5
    assert (table["a"]["min"], table["a"]["max"]) == (1.0, 2.0)  # rounds 1 and 2: half in the slow period
    assert table["b"]["median"] == 1.0 and table[PLAIN]["segments"] == 5
    assert table["a"]["update_ms"] == 1000 * 1.5 / 4


def test_interleaved_benchmark_table_is_its_segments(tiny_corpus, tmp_path):
    """user_scripts/bench_interleaved.py on a tiny model: every configuration in one process,
    plain adam opening each round and closing the run, and each table row the median and
    spread of segment time / mean of the plain segments around it, recomputed here."""
    import json
    import statistics

    from conftest import TINY_MODEL

    out = run([sys.executable, REPO / "user_scripts" / "bench_interleaved.py", "--device", "cpu", "--data",
               tiny_corpus, "--rounds", "3", "--segment-updates", "2", "--warmup-updates", "1",
               "--configs", "^guided_adam (nothing|alpha,beta1)$|again", "--model", " ".join(TINY_MODEL),
               "--max-tokens", "500", "--out", tmp_path / "bench.md"])
    assert out.returncode == 0, out.stdout[-3000:]
    record = json.loads((tmp_path / "bench.json").read_text())
    segments = record["segments"]
    names = ["plain adam", "guided_adam nothing", "guided_adam alpha,beta1", "plain adam, again"]
    assert [s["config"] for s in segments if s["round"] == 0] == names
    assert [s["round"] for s in segments if s["config"] == "plain adam"] == [0, 1, 2, 3]
    assert all(s["seconds"] > 0 for s in segments)
    plain = {s["round"]: s["seconds"] for s in segments if s["config"] == "plain adam"}
    table = {row["config"]: row for row in record["table"]}
    assert set(table) == set(names)
    for name in names[1:]:
        mine = [s["seconds"] / ((plain[s["round"]] + plain[s["round"] + 1]) / 2)
                for s in segments if s["config"] == name]
        q1, _, q3 = statistics.quantiles(mine, n=4, method="inclusive")
        assert table[name]["segments"] == 3
        assert table[name]["median"] == pytest.approx(statistics.median(mine))
        assert (table[name]["min"], table[name]["max"]) == pytest.approx((min(mine), max(mine)))
        assert (table[name]["q1"], table[name]["q3"]) == pytest.approx((q1, q3))
    text = (tmp_path / "bench.md").read_text()
    for name in names:
        assert f"| {name} | {table[name]['update_ms']:.1f} | {table[name]['median']:.3f} |" in text
