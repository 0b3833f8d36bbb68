"""fairseq's data-parallel training, 2 CPU processes with gloo: every rank holds the same
learned values at every step, each uses its own shard of the guidance batch, and the run
matches one process that sees the same global batches (--update-freq 2). The tuning-free
optimizers (schedulefree_adamw, prodigy) match one process the same way."""
import math
import re
import signal
import socket
import subprocess
import time

import pytest
import torch

import fairseq_guided  # noqa: F401 (safe globals for torch.load of fairseq checkpoints)

from conftest import ENV, binarize, json_logs, run, train_cmd, write_cipher_corpus

FLAGS = ["--optimizer", "guided_adam", "--lr", "0.005", "--guided-hparams", "alpha,beta1",
         "--guided-meta-lr", "0.01", "--max-update", "12", "--curriculum", "100",
         "--required-batch-size-multiple", "1", "--dropout", "0", "--cpu"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def corpus_with_two_guide_batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_cipher_corpus(root, {"train": 400, "valid": 16, "test": 16, "guide": 16}, seed=5)
    binarize(root, root / "bin")
    return root / "bin"


def worker_cmd(data, save_dir, flags, rank, port, task="guided_translation"):
    """fairseq-train's command for rank `rank` of 2 gloo workers, each with batches of 8 sentences."""
    cmd = train_cmd(data, save_dir, *flags,
                    "--distributed-world-size", "2", "--distributed-rank", str(rank),
                    "--distributed-init-method", f"tcp://127.0.0.1:{port}",
                    "--distributed-backend", "gloo", "--distributed-no-spawn",
                    "--ddp-backend", "legacy_ddp", batching=("--batch-size", "8"))
    cmd[cmd.index("guided_translation")] = task
    return [str(c) for c in cmd]


def two_workers(data, save_dir, flags, task="guided_translation"):
    """The outputs of fairseq-train on 2 gloo workers, each with batches of 8 sentences."""
    port = free_port()
    procs = [subprocess.Popen(worker_cmd(data, save_dir, flags, rank, port, task), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=ENV) for rank in range(2)]
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
    return outputs


def test_two_workers_match_one_process_with_the_same_global_batches(corpus_with_two_guide_batches, tmp_path):
    data = corpus_with_two_guide_batches
    outputs = two_workers(data, tmp_path / "ddp", [*FLAGS, "--guidance-batch-size", "8"])
    ddp = json_logs(outputs[0])
    assert len(ddp) == 12
    # the raw values of both ranks were summed with the hypergradients at every meta step
    assert all(float(r["guided_rank_drift"]) == 0.0 for r in ddp)
    # each rank drew its own half of the split's first pass: 8 of the 16 guide sentences
    assert "guidance batch: 8 sentences" in outputs[0] and "(16 examples of 'guide')" in outputs[0]

    matches_one_process(data, tmp_path / "single", FLAGS, ddp,
                        ("guided_alpha", "guided_beta1", "hgrad_alpha", "hgrad_beta1"))


def matches_one_process(data, save_dir, flags, ddp, keys):
    """One process seeing the same global batches (--update-freq 2) logs the same losses,
    and the logged `keys` within float tolerance, as the 2-worker run's rows `ddp`."""
    single = run(train_cmd(data, save_dir, *flags, "--guidance-batch-size", "16",
                           "--update-freq", "2", batching=("--batch-size", "8")))
    assert single.returncode == 0, single.stdout[-3000:]
    one = json_logs(single.stdout)
    assert len(one) == 12
    for a, b in zip(ddp, one):
        assert a["guide_loss"] == b["guide_loss"] and a["loss"] == b["loss"], (a, b)
        for key in keys:
            assert math.isclose(float(a[key]), float(b[key]), rel_tol=1e-4, abs_tol=1e-6), (key, a, b)


TUNING_FREE = {"schedulefree_adamw": ["--lr", "0.0025"], "prodigy": ["--lr", "1.0"]}


@pytest.mark.parametrize("name", list(TUNING_FREE))
def test_tuning_free_optimizers_on_two_workers_match_one_process(corpus_with_two_guide_batches, tmp_path, name):
    """fairseq's stock translation task with each tuning-free optimizer: the 2-worker run
    and one process with --update-freq 2 log the same losses, validate alike at update 6
    (where schedule-free switches to its evaluation weights and back on every rank) and
    save the same weights."""
    data = corpus_with_two_guide_batches
    flags = ["--optimizer", name, *TUNING_FREE[name], "--max-update", "12", "--save-interval-updates", "6",
             "--curriculum", "100", "--required-batch-size-multiple", "1", "--dropout", "0", "--cpu"]
    ddp_output = two_workers(data, tmp_path / "ddp", flags, task="translation")[0]
    ddp = json_logs(ddp_output)
    cmd = train_cmd(data, tmp_path / "single", *flags, "--update-freq", "2", batching=("--batch-size", "8"))
    cmd[cmd.index("guided_translation")] = "translation"
    single = run(cmd)
    assert single.returncode == 0, single.stdout[-3000:]
    one = json_logs(single.stdout)
    assert len(ddp) == len(one) == 12
    for a, b in zip(ddp, one):
        assert math.isclose(float(a["loss"]), float(b["loss"]), abs_tol=1e-3), (a, b)
        if name == "prodigy":  # every rank's estimate of d, from the all-reduced gradients
            assert math.isclose(float(a["prodigy_d"]), float(b["prodigy_d"]), rel_tol=1e-3), (a, b)
    # validation at update 6 and 12 (the last one counts)
    ddp_valid = json_logs(ddp_output, "valid")
    one_valid = json_logs(single.stdout, "valid")
    assert len(ddp_valid) == len(one_valid) == 2
    for a, b in zip(ddp_valid, one_valid):
        assert math.isclose(float(a["valid_loss"]), float(b["valid_loss"]), abs_tol=1e-3), (a, b)

    saved = [torch.load(tmp_path / run_dir / "checkpoint_last.pt", weights_only=True)["model"]
             for run_dir in ("ddp", "single")]
    for key, tensor in saved[0].items():
        assert torch.allclose(tensor, saved[1][key], rtol=1e-4, atol=1e-5), key


def test_a_killed_worker_resumes_with_the_same_command_and_matches_the_uninterrupted_run(
        corpus_with_two_guide_batches, tmp_path):
    """Rank 1 SIGKILLed at update 6 (checkpoint at 4): rank 0 stops within seconds, saying
    why. Both restarted with the same command resume at update 5 (rank 0 broadcasts the
    checkpoint; rank 1's torch.load of it refused the cfg's omegaconf types before
    compat.allow_broadcast_resume_state) and end with the weights and learned values of
    the uninterrupted 2-worker run, bit for bit."""
    data = corpus_with_two_guide_batches
    flags = [*FLAGS, "--guidance-batch-size", "8", "--save-interval-updates", "4"]
    two_workers(data, tmp_path / "whole", flags)

    save = tmp_path / "killed"
    port = free_port()
    with open(tmp_path / "rank1.log", "w") as rank1_log:
        rank1 = subprocess.Popen(worker_cmd(data, save, flags, 1, port), stdout=rank1_log,
                                 stderr=subprocess.STDOUT, text=True, env=ENV)
        rank0 = subprocess.Popen(worker_cmd(data, save, flags, 0, port), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=ENV)
        try:
            seen = []
            for line in rank0.stdout:
                seen.append(line)
                rows = json_logs(line)
                if rows and int(rows[0]["num_updates"]) >= 6:
                    rank1.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    break
            else:
                pytest.fail("rank 0 ended before rank 1 was killed:\n" + "".join(seen)[-3000:])
            rest = rank0.communicate(timeout=300)[0]
            survivor_s = time.monotonic() - killed
        finally:
            for proc in (rank0, rank1):
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
    assert rank1.returncode == -signal.SIGKILL
    assert rank0.returncode != 0 and "num_updates\": \"12\"" not in rest, rest[-3000:]
    # gloo's own report, naming the peer it lost (3-6 s after the kill here)
    assert re.search(r"gloo/transport/tcp/pair\.cc.*(reset by peer|closed by peer|Broken pipe)", rest), rest[-3000:]
    assert survivor_s < 30, (survivor_s, rest[-3000:])
    assert updates_in(save / "checkpoint_last.pt") == 4

    resumed = two_workers(data, save, flags)  # the same command (a new rendezvous port)
    assert [int(r["num_updates"]) for r in json_logs(resumed[0])] == list(range(5, 13))
    whole, again = (torch.load(d / "checkpoint_last.pt", weights_only=True) for d in (tmp_path / "whole", save))
    assert again["optimizer_history"][-1]["num_updates"] == 12
    assert whole["model"].keys() == again["model"].keys()
    for key, tensor in whole["model"].items():
        assert torch.equal(tensor, again["model"][key]), key
    hyper = [c["last_optimizer_state"]["guided_hyper"] for c in (whole, again)]
    for key in ("raw", "exp_avg", "exp_avg_sq", "steps"):
        assert torch.equal(hyper[0][key], hyper[1][key]), key


def updates_in(path):
    return torch.load(path, weights_only=True)["optimizer_history"][-1]["num_updates"]
