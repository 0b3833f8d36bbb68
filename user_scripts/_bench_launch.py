"""Run fairseq-train in this process and, when it ends, write the peak accelerator memory
to $BENCH_RESULT (JSON). Used by benchmark.py; arguments are fairseq-train's."""
import json
import os
import sys

import torch
from fairseq_cli.train import cli_main

if __name__ == "__main__":
    sys.argv = ["fairseq-train"] + sys.argv[1:]
    try:
        cli_main()
    finally:
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        with open(os.environ["BENCH_RESULT"], "w") as f:
            json.dump({"peak_bytes": peak}, f)
