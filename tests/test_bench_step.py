"""user_scripts/bench_step.py runs end to end on the CPU and prints every optimizer's step
time, its ratio to stock adam and, for the learning ones, a finite hypergradient time."""
import re
import sys

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
