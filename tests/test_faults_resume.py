"""Issue 15, case 3: a changed --guided-steepness on resume keeps the learned value (it
used to restore the raw value under the new steepness: beta1 0.915 -> 0.99998); a changed
--guided-hparams is refused."""
from conftest import json_logs, run, train_cmd

FLAGS = ["--optimizer", "guided_adam", "--lr", "0.005", "--guided-hparams", "alpha,beta1",
         "--guided-meta-lr", "0.002", "--batch-size", "32"]


def test_changed_steepness_on_resume_keeps_the_learned_values(tiny_corpus, tmp_path):
    first = run(train_cmd(tiny_corpus, tmp_path / "ckpt", *FLAGS, "--max-update", "10"))
    assert first.returncode == 0, first.stdout[-2000:]
    resumed = run(train_cmd(tiny_corpus, tmp_path / "ckpt", *FLAGS, "--max-update", "12",
                            "--guided-steepness", "alpha=3,beta1=4"))
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    before, after = json_logs(first.stdout)[-1], json_logs(resumed.stdout)[0]
    assert int(before["num_updates"]) == 10 and int(after["num_updates"]) == 11
    for name, steepness in (("guided_alpha", 3), ("guided_beta1", 4)):
        # one meta step of at most ~meta-lr in raw space, times the slope, apart
        step = abs(float(after[name]) - float(before[name]))
        assert step < 2 * steepness * 0.002 * max(1.0, float(before[name])), (name, before, after)
    assert float(after["guided_beta1"]) < 0.95  # not sigmoid(4 * raw) ~ 0.9998
    # another list of learned names is refused, not mixed up with the saved ones
    other = run(train_cmd(tiny_corpus, tmp_path / "ckpt", *FLAGS, "--max-update", "14",
                          "--guided-hparams", "beta1"))
    assert other.returncode != 0 and "num_updates" not in other.stdout
    assert "checkpoint learns hyper-parameters ['alpha', 'beta1'] but --guided-hparams asks for ['beta1']" \
        in other.stdout, other.stdout[-2000:]
