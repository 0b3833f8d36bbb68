"""fairseq-train (through cpu_as_cuda.py, so --fp16 runs on a CPU) with each training
update counted for host reads: the calls of aten._local_scalar_dense, which is what
.item(), float(t), int(t) and bool(t) on a tensor run, and what on a GPU waits for the
device. Each read is the plugin's when the innermost frame outside torch that made it is
in fairseq_guided; else it is fairseq's (its trainer, or a model's forward: torch's
attention checks its masks once per attention module). The counts per update,
{update: {"plugin": n, "fairseq": n}}, go to the JSON file named by $HOST_READS_OUT.

    python tests/launchers/count_host_reads.py fairseq-train [its arguments]
"""
import atexit
import json
import os
import runpy
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_READ = torch.ops.aten._local_scalar_dense.default
TORCH = str(Path(torch.__file__).parent)
PLUGIN = str(Path(__file__).resolve().parents[2] / "fairseq_guided")


def reader() -> str:
    """'plugin' or 'fairseq': who made the read being dispatched."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(TORCH) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return "plugin" if frame is not None and frame.f_code.co_filename.startswith(PLUGIN) else "fairseq"


class CountHostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = {"plugin": 0, "fairseq": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is HOST_READ:
            self.count[reader()] += 1
        return func(*args, **(kwargs or {}))


def count_train_steps(counts: dict) -> None:
    from fairseq.trainer import Trainer

    train_step = Trainer.train_step

    def counted(self, samples, raise_oom=False):
        with CountHostReads() as mode:
            out = train_step(self, samples, raise_oom)
        counts[self.get_num_updates()] = mode.count
        return out

    Trainer.train_step = counted


if __name__ == "__main__":
    counts = {}
    atexit.register(lambda: Path(os.environ["HOST_READS_OUT"]).write_text(json.dumps(counts)))
    count_train_steps(counts)
    runpy.run_path(str(Path(__file__).with_name("cpu_as_cuda.py")), run_name="__main__")
