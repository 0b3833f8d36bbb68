"""The hot path's guard without a GPU: in steady-state guided updates and meta steps the
plugin reads the device from the host a fixed number of times, whatever the number of
parameter tensors (a per-parameter .item() would be one wait for the GPU per tensor per
step). Counted with a TorchDispatchMode in fairseq-train itself
(tests/launchers/count_host_reads.py), the same model at 2 and at 8 layers, for the
three optimizers, with and without groups, in fp32 and flat --fp16. fairseq's own reads
(its trainer; torch's attention, once per attention module in every forward, the
guidance pass's included) are counted apart and printed."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ENV, REPO, TINY_MODEL, train_cmd

sys.path.insert(0, str(REPO / "tests" / "launchers"))
from count_host_reads import CountHostReads  # noqa: E402

LAUNCH = [sys.executable, REPO / "tests" / "launchers" / "count_host_reads.py", "fairseq-train"]
EXTRA = {"guided_adafactor": ["--beta1", "0.9"]}
MODES = {"fp32": [], "groups": ["--guided-groups", "embed,encoder,decoder"],
         "flat-fp16-groups": ["--fp16", "--guided-groups", "embed,encoder,decoder"]}
UPDATES = 6
STEADY = [str(u) for u in range(3, UPDATES + 1)]  # update 1 and 2 create state


def counts(data, save, optimizer, layers, flags):
    cmd = train_cmd(data, save, "--optimizer", optimizer, *EXTRA.get(optimizer, []), "--lr", "0.005",
                    "--guided-hparams", "alpha,beta1", "--guided-meta-lr", "0.01", "--max-update", str(UPDATES),
                    "--log-interval", "1000", "--save-interval-updates", "1000", "--no-save", *flags)
    model = [str(layers) if prev in ("--encoder-layers", "--decoder-layers") else a
             for prev, a in zip([None] + TINY_MODEL[:-1], TINY_MODEL)]
    cmd = cmd[:cmd.index(TINY_MODEL[0])] + model + cmd[cmd.index(TINY_MODEL[0]) + len(TINY_MODEL):]
    out_file = save / f"reads-{layers}.json"
    out = subprocess.run([str(c) for c in LAUNCH + cmd[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(ENV, HOST_READS_OUT=str(out_file)))
    assert out.returncode == 0, out.stdout[-3000:]
    return json.loads(out_file.read_text())


def test_the_counter_sees_every_kind_of_host_read():
    t = torch.ones(3)
    with CountHostReads() as mode:
        t.sum().item(), float(t[0]), int(t[1]), bool(t[2] > 0), (t * 2).sum()
    assert mode.count == {"plugin": 0, "fairseq": 4}  # made here, outside fairseq_guided


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("optimizer", ["guided_adam", "guided_lamb", "guided_adafactor"])
def test_host_reads_do_not_grow_with_the_number_of_tensors(tiny_corpus, tmp_path, optimizer, mode):
    shallow = counts(tiny_corpus, tmp_path, optimizer, 2, MODES[mode])
    deep = counts(tiny_corpus, tmp_path, optimizer, 8, MODES[mode])
    assert set(STEADY) <= set(shallow) and set(STEADY) <= set(deep), (shallow, deep)
    plugin = [(shallow[u]["plugin"], deep[u]["plugin"]) for u in STEADY]
    stock = [(shallow[u]["fairseq"], deep[u]["fairseq"]) for u in STEADY]
    print(f"\n{optimizer} {mode}: host reads per update at 2 / 8 layers: plugin {plugin}, fairseq {stock}")
    assert all(a == b for a, b in plugin), plugin
