"""fairseq's data-parallel training, 2 CPU processes with gloo: every rank holds the same
learned values at every step, each uses its own shard of the guidance batch, and the run
matches one process that sees the same global batches (--update-freq 2)."""
import math
import socket
import subprocess

import pytest

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


def two_workers(data, save_dir, flags):
    """The outputs of fairseq-train on 2 gloo workers, each with batches of 8 sentences."""
    port = free_port()
    procs = []
    for rank in range(2):
        cmd = train_cmd(data, save_dir, *flags, "--guidance-batch-size", "8",
                        "--distributed-world-size", "2", "--distributed-rank", str(rank),
                        "--distributed-init-method", f"tcp://127.0.0.1:{port}",
                        "--distributed-backend", "gloo", "--distributed-no-spawn",
                        "--ddp-backend", "legacy_ddp", batching=("--batch-size", "8"))
        procs.append(subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=ENV))
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
    return outputs


def test_two_workers_match_one_process_with_the_same_global_batches(corpus_with_two_guide_batches, tmp_path):
    data = corpus_with_two_guide_batches
    outputs = two_workers(data, tmp_path / "ddp", FLAGS)
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
