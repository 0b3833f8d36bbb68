"""The contract between the plugin and the recipes' readers: the fairseq log keys that
guided_recipes reads (guided_recipes.report.logkeys, the list the readers themselves use)
are the keys a real guided fairseq-train run writes, and the plugin writes no other key of
its own that the list does not know."""
import pytest

from conftest import json_logs, run, train_cmd
from guided_recipes.report import logkeys
from guided_recipes.report.runlogs import learned_curves, log_rows

FLAGS = ["--optimizer", "guided_adam", "--lr", "1e-3", "--max-update", "6", "--validate-interval-updates", "6",
         "--no-save", "--guidance-max-tokens", "500", "--guided-meta-lr", "1e-3",
         "--eval-bleu", "--eval-bleu-args", '{"beam": 1}', "--eval-bleu-detok", "space"]


def train(tiny_corpus, folder, *extra):
    """A tiny guided run logged as the recipes log (--log-file); its train_inner and valid
    rows as the readers read them (runlogs.log_rows), and the console's json rows."""
    folder.mkdir()
    out = run(train_cmd(tiny_corpus, folder, *FLAGS, "--log-file", folder / "train.log", *extra))
    assert out.returncode == 0, out.stdout[-3000:]
    return (log_rows(folder / "train.log", "train_inner"), log_rows(folder / "train.log", "valid"),
            json_logs(out.stdout))


def plain_keys(tiny_corpus, folder) -> set:
    """The keys stock fairseq (its translation task, its adam) writes to train_inner."""
    folder.mkdir()
    cmd = [str(c) for c in train_cmd(tiny_corpus, folder, "--optimizer", "adam", "--lr", "1e-3", "--max-update", "6",
                                     "--no-save", "--disable-validation")]
    cmd[cmd.index("guided_translation")] = "translation"
    out = run(cmd)
    assert out.returncode == 0, out.stdout[-3000:]
    return set().union(*json_logs(out.stdout))


@pytest.fixture(scope="module")
def fairseq_keys(tiny_corpus, tmp_path_factory):
    return plain_keys(tiny_corpus, tmp_path_factory.mktemp("plain") / "run")


def test_every_key_the_readers_read_is_written(tiny_corpus, tmp_path, fairseq_keys):
    inner, valid, _ = train(tiny_corpus, tmp_path / "run", "--guided-hparams", "alpha,beta1",
                            "--guidance-time-pass")
    assert inner and valid
    missing = [k for k in logkeys.READ_TRAIN if not all(k in row for row in inner)]
    assert not missing, f"train_inner rows lack {missing}: {sorted(inner[-1])}"
    missing = [k for k in logkeys.READ_VALID if k not in valid[-1]]
    assert not missing, f"valid rows lack {missing}: {sorted(valid[-1])}"
    # exactly: the plugin's own keys are those the list knows, no more, no fewer
    written = set().union(*inner) - fairseq_keys
    assert written == logkeys.plugin_keys(("alpha", "beta1"), timed=True)
    # and the readers find both learned values through them
    curves = learned_curves(tmp_path / "run")
    assert sorted(curves) == [logkeys.ALPHA, logkeys.BETA1]
    assert [u for u, _ in curves[logkeys.BETA1]] == [int(r["num_updates"]) for r in inner]


def test_grouped_keys_are_the_ones_the_readers_split(tiny_corpus, tmp_path, fairseq_keys):
    """--guided-groups: guided_NAME/GROUP, which the groups study and its plot split on '/'."""
    inner, _, _ = train(tiny_corpus, tmp_path / "run", "--guided-hparams", "beta1",
                        "--guided-groups", "embed,encoder,decoder")
    groups = ("embed", "encoder", "decoder")
    assert set().union(*inner) - fairseq_keys == logkeys.plugin_keys(("beta1",), groups)
    curves = learned_curves(tmp_path / "run")
    assert sorted(logkeys.learned_name(k) for k in curves) == sorted(f"beta1/{g}" for g in groups)


def test_learning_nothing_writes_no_learned_value(tiny_corpus, tmp_path, fairseq_keys):
    inner, _, _ = train(tiny_corpus, tmp_path / "run")
    assert not [k for k in set().union(*inner) if logkeys.is_learned(k)]
    assert learned_curves(tmp_path / "run") == {}


def test_other_guided_keys_are_not_learned_values():
    """The plugin also logs guided_skipped (an --amp step skipped) and guided_rank_drift
    (DDP): the readers' 'guided_' prefix must not take them for learned values."""
    assert logkeys.is_learned("guided_beta1") and logkeys.is_learned("guided_alpha/encoder")
    assert not logkeys.is_learned("guided_skipped") and not logkeys.is_learned("guided_rank_drift")
