"""Issue 25, item 1: with the plugin imported, stock fairseq behaves as stock fairseq. The
wrapped checkpoint_utils.load_checkpoint is called with configs like fairseq's own tests
build (tests/test_train.py: no save_dir, restore_file or no_save; test_checkpoint_utils_
for_task_level_attributes.py: save_dir None) on real trainers, and must end as fairseq's
own function does; only a guided run takes the --save-dir lock."""
import argparse

import pytest
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer
from omegaconf import OmegaConf

import fairseq_guided  # noqa: F401 (wraps load_checkpoint, as --user-dir does)
from conftest import PLUGIN, TINY_MODEL, run, train_cmd
from fairseq_guided import preflight

FAIRSEQS_OWN = checkpoint_utils.load_checkpoint.__wrapped__

RUNS = {"stock": ["--task", "translation", "--optimizer", "adam"],
        "guided": ["--task", "guided_translation", "--optimizer", "guided_adam", "--guided-hparams", "alpha"]}


def trainer_for(data, save_dir, kind):
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--user-dir", PLUGIN, *TINY_MODEL, *RUNS[kind], "--lr", "0.001", "--max-tokens", "1000",
        "--save-dir", str(save_dir), "--cpu", "--seed", "1", "--num-workers", "0"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return Trainer(cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion))


# fairseq's tests/test_train.py get_mock_cfg: the keys load_checkpoint reads, and no others
BASE = {"optimizer_overrides": "{}", "reset_dataloader": False, "reset_meters": False, "reset_optimizer": False,
        "reset_lr_scheduler": False, "finetune_from_model": None, "model_parallel_size": 1}
CONFIGS = {
    "test_train": {},
    "save_dir-None": dict(save_dir=None, restore_file="checkpoint_last.pt", no_save=False),
    "save_dir-None-restore-file": dict(save_dir=None, restore_file="{save}/absent.pt", no_save=False),
    "no-no_save": dict(save_dir="{save}", restore_file="checkpoint_last.pt"),
    "namespace-no-no_save": dict(save_dir="{save}", restore_file="{save}/absent.pt"),
}


def checkpoint_config(name, save_dir):
    keys = {k: v.format(save=save_dir) if isinstance(v, str) else v for k, v in CONFIGS[name].items()}
    if name.startswith("namespace"):
        return argparse.Namespace(**BASE, **keys)
    return OmegaConf.create({"checkpoint": dict(BASE, **keys), "common": {"model_parallel_size": 1}}).checkpoint


def outcome(load, cfg, trainer):
    try:
        extra_state, epoch_itr = load(cfg, trainer)
    except Exception as e:  # fairseq's own error is part of its behaviour
        return type(e).__name__, str(e)
    return extra_state, epoch_itr.epoch, epoch_itr.iterations_in_epoch


@pytest.fixture(scope="module")
def trainers(tiny_corpus, tmp_path_factory):
    return {kind: trainer_for(tiny_corpus, tmp_path_factory.mktemp(kind), kind) for kind in RUNS}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", list(RUNS))
def test_load_checkpoint_behaves_as_fairseqs_own_on_fairseqs_test_configs(trainers, tmp_path, kind, config):
    cfg = checkpoint_config(config, tmp_path)
    expected = outcome(FAIRSEQS_OWN, cfg, trainers[kind])
    assert outcome(checkpoint_utils.load_checkpoint, cfg, trainers[kind]) == expected
    if kind == "stock":
        assert not list(tmp_path.rglob(preflight.LOCK_NAME))


def test_only_a_guided_run_takes_the_save_dir_lock(tiny_corpus, tmp_path):
    for kind, flags in RUNS.items():
        save = tmp_path / kind
        out = run(train_cmd(tiny_corpus, save, *flags, "--lr", "0.001", "--max-update", "2"))
        assert out.returncode == 0, out.stdout[-2000:]
        assert (save / "checkpoint_last.pt").exists()
        assert (save / preflight.LOCK_NAME).exists() == (kind == "guided"), kind
