"""Run fairseq-train in this process and, when it ends, write its peak memory to
$BENCH_RESULT (JSON): allocated GPU memory on CUDA, the process's peak resident set on a
CPU. Used by benchmark.py; arguments are fairseq-train's."""
import json
import os
import resource
import sys

import torch
from fairseq_cli.train import cli_main

if __name__ == "__main__":
    sys.argv = ["fairseq-train"] + sys.argv[1:]
    try:
        cli_main()
    finally:
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        with open(os.environ["BENCH_RESULT"], "w") as f:
            json.dump({"peak_bytes": peak}, f)
