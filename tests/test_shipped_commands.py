"""Every shipped preset and command, as written, through fairseq's own code path: the
NMT recipe's fairseq-hydra-train command for each configs/nmt preset and the benchmark's
commands, each with only the model shrunk and the run cut to two updates, on the CPU.
Where a preset needs CUDA (flat --fp16), tests/launchers/cpu_as_cuda.py stands in for
fairseq's one CUDA call, so FP16Optimizer.build_optimizer and the flat fp32 masters are
the real ones. A preset that cannot build its optimizer or take a guided update fails
here, not on a lent GPU."""
import argparse
import re
import sys
from pathlib import Path

import pytest

from conftest import REPO, json_logs, run
from guided_recipes.bench import benchmark
from guided_recipes.run import nmt

LAUNCH = [sys.executable, REPO / "tests" / "launchers" / "cpu_as_cuda.py"]
SHRINK_HYDRA = [f"model.{part}.{key}={value}" for part in ("encoder", "decoder")
                for key, value in (("layers", 1), ("embed_dim", 32), ("ffn_embed_dim", 64), ("attention_heads", 2))]
SHRINK_CLI = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim",
              "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads",
              "2", "--decoder-attention-heads", "2"]


def hydra_rows(stdout: str):
    return json_logs(stdout.replace("][train_inner][INFO] - ", " | train_inner | "))


def test_every_nmt_yaml_is_a_recipe_preset():
    shipped = {p.stem for p in (REPO / "configs" / "nmt").glob("*.yaml")} - {"recipes", "tuning_free"}
    assert shipped == set(nmt.PRESETS)


@pytest.mark.parametrize("name", sorted(nmt.PRESETS))
def test_nmt_preset_command_takes_guided_updates(tiny_corpus, tmp_path, name):
    preset = nmt.PRESETS[name]
    cmd = nmt.train_command(tiny_corpus, tmp_path, "alpha+beta1", 1, preset,
                            overrides=[*SHRINK_HYDRA, "optimization.max_update=2", "common.log_interval=1",
                                       "checkpoint.no_save=true"])
    assert Path(cmd[0]).name == "fairseq-hydra-train"
    out = run(LAUNCH + ["fairseq-hydra-train"] + cmd[1:])
    assert out.returncode == 0, out.stdout[-4000:]
    rows = hydra_rows(out.stdout) or json_logs((tmp_path / "train.log").read_text().replace("{", " | train_inner | {", 1))
    assert len(rows) == 2 and "guided_alpha" in rows[-1] and "guided_beta1" in rows[-1], out.stdout[-2000:]
    if preset.fp16:
        assert "loss_scale" in rows[-1]  # FP16Optimizer, with fairseq's default flat masters
        assert "fp16_no_flatten_grads" not in str(preset.config)


@pytest.mark.parametrize("arm", sorted(nmt.TUNING_FREE))
@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_tuning_free_arm_commands_train(tiny_corpus, tmp_path, name, arm):
    """Each tuning-free arm of configs/nmt/tuning_free.yaml on the presets the study runs it
    on (the gpu one with flat --fp16), as the recipe builds it: the package's optimizer at
    its default lr with the stock translation task."""
    cmd = nmt.train_command(tiny_corpus, tmp_path, arm, 1, nmt.PRESETS[name],
                            overrides=[*SHRINK_HYDRA, "optimization.max_update=2", "common.log_interval=1",
                                       "checkpoint.no_save=true"])
    out = run(LAUNCH + ["fairseq-hydra-train"] + cmd[1:])
    assert out.returncode == 0, out.stdout[-4000:]
    rows = hydra_rows(out.stdout) or json_logs((tmp_path / "train.log").read_text().replace("{", " | train_inner | {", 1))
    assert len(rows) == 2 and "guided_alpha" not in rows[-1], out.stdout[-2000:]
    spec = nmt.TUNING_FREE[arm]  # fairseq prints the resolved config first
    assert f"'optimizer': {{'_name': '{spec['optimizer']['_name']}'" in out.stdout
    assert f"'lr_scheduler': {{'_name': '{spec['lr_scheduler']['_name']}'" in out.stdout
    assert "'task': {'_name': 'translation'" in out.stdout and f"'lr': [{spec['lr']}]" in out.stdout
    if nmt.PRESETS[name].fp16:
        assert "loss_scale" in rows[-1]


@pytest.mark.parametrize("device", sorted(benchmark.PRESETS))
@pytest.mark.parametrize("optimizer", ["guided_lamb", "guided_adam"])
def test_benchmark_commands_take_guided_updates(tiny_corpus, device, optimizer):
    args = argparse.Namespace(device=device, updates=2, log_interval=1)
    cmd = benchmark.bench_command(args, benchmark.PRESETS[device], optimizer, "alpha,beta1", 4, 1, ())
    out = run(LAUNCH + ["fairseq-train", tiny_corpus, *cmd, *SHRINK_CLI, "--source-lang", "src",
                        "--target-lang", "tgt"])
    assert out.returncode == 0, out.stdout[-4000:]
    rows = json_logs(out.stdout)
    assert len(rows) == 2 and "guided_alpha" in rows[-1] and "guide_pass_ms" in rows[-1]


def test_recipe_command_survives_hydra_changing_directory(tiny_corpus, tmp_path, monkeypatch):
    """fairseq-hydra-train runs inside hydra.run.dir: the README's relative --data and
    --out must reach it as absolute paths."""
    monkeypatch.chdir(tiny_corpus.parent)
    cmd = nmt.train_command(Path(tiny_corpus.name), Path("runs") / "x", "base", 1, nmt.PRESETS["tiny"])
    paths = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in cmd if "=" in arg}
    for key in ("task.data", "checkpoint.save_dir", "common.log_file", "hydra.run.dir"):
        assert Path(paths[key]).is_absolute(), (key, paths[key])
    assert paths["task.data"] == str(tiny_corpus)


def test_the_readme_fast_subset_runs_the_math_and_nothing_else():
    readme = (REPO / "README.md").read_text()
    assert "\nbash scripts/run_tests.sh -m fast\n" in readme
    out = run(["bash", REPO / "scripts" / "run_tests.sh", "-m", "fast"])
    assert out.returncode == 0, out.stdout[-3000:]
    counts = dict((name, int(n)) for n, name in re.findall(r"(\d+) (passed|failed|deselected)", out.stdout))
    assert counts.get("passed", 0) > 100 and counts.get("deselected", 0) > 100 and "failed" not in counts, counts


def test_every_preset_is_a_yaml_file_under_configs():
    """Presets in one form (guided_recipes.presets): the NMT recipe's, the T5 recipe's (each
    value with its source) and the benchmarks' model are the YAML files under configs/."""
    from guided_recipes import presets
    from guided_recipes.run import t5

    assert set(presets.T5) == {p.stem for p in (REPO / "configs" / "t5").glob("*.yaml")} == set(t5.PRESETS)
    assert set(presets.BENCH) == {p.stem for p in (REPO / "configs" / "bench").glob("*.yaml")} == set(benchmark.PRESETS)
    for name, settings in presets.T5.items():
        assert all(isinstance(source, str) and source for _, source in settings.values()), name
        assert set(settings) == set(presets.T5["tiny"]), name
    assert all({"model", "max_tokens", "extra"} == set(p) for p in presets.BENCH.values())


def test_the_mutation_pass_runs_the_fast_subset():
    """mutmut's test selection (pyproject.toml) is the fast subset: a test added to one list
    and not the other would be run by the mutation pass and not by `-m fast`, or not kill."""
    import tomllib

    from conftest import FAST_MODULES

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    selected = {Path(p).stem for p in config["pytest_add_cli_args_test_selection"]}
    assert selected == FAST_MODULES
    assert all((REPO / p).is_file() for p in config["pytest_add_cli_args_test_selection"])
