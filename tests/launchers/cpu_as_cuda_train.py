"""fairseq-train in this process with the one CUDA call of flat --fp16 stood in for, so
the flat fp32-master path (FP16Optimizer.build_fp32_params with flatten=True) runs on a
CPU: fairseq asks torch.cuda.current_device() only to key its buffer by device index, and
a CPU tensor's device index is None. Everything else is fairseq's own code.

    python tests/launchers/cpu_as_cuda_train.py DATA [fairseq-train args]
"""
import sys

import torch

torch.cuda.current_device = lambda: None

if __name__ == "__main__":
    from fairseq_cli.train import cli_main

    sys.argv = ["fairseq-train"] + sys.argv[1:]
    cli_main()
