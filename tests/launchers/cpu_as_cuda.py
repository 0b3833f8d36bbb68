"""A fairseq command line tool in this process with the CUDA calls of --fp16 stood in for,
so fairseq's flat fp32-master path (FP16Optimizer.build_fp32_params with flatten=True)
and its overflow path run on a CPU: fairseq asks torch.cuda.current_device() only to key
its buffer by device index (a CPU tensor's index is None), and after an overflow it makes
a zero grad norm with torch.tensor(0.0).cuda(). Everything else is fairseq's own code: a
GPU preset's exact command runs here on a shrunk model.

    python tests/launchers/cpu_as_cuda.py fairseq-train|fairseq-hydra-train [its arguments]
"""
import sys

import torch

if not torch.cuda.is_available():  # on a GPU machine the same tests run on CUDA for real
    torch.cuda.current_device = lambda: None
    torch.Tensor.cuda = lambda self, *args, **kwargs: self

if __name__ == "__main__":
    tool = sys.argv[1]
    if tool == "fairseq-train":
        from fairseq_cli.train import cli_main
    elif tool == "fairseq-hydra-train":
        from fairseq_cli.hydra_train import cli_main
    else:
        sys.exit(f"unknown tool {tool!r}")
    sys.argv = [tool] + sys.argv[2:]
    cli_main()
