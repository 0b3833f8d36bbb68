"""The optimizer step alone, guided against fairseq's stock adam, in one process.

    python user_scripts/bench_step.py --device cpu    # the benchmark's CPU model
    python user_scripts/bench_step.py --device cuda   # the ~121M-parameter model

benchmark.py compares whole training runs, whose run-to-run noise (about 12% on a
shared 2-core VM) hides a few percent. Here every optimizer updates the same model's
parameters from the same fixed gradients, in interleaved rounds, so slow periods of the
machine hit all of them alike. Prints the median step time of each and its ratio to
stock adam, and the time of one hypergradient from a materialised guidance gradient
(the dot products the meta step's hooks form, all at once).
"""
import argparse
import statistics
import time

import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim import build_optimizer

from ..common import OFFLINE_CORPUS, PLUGIN
from ..presets import BENCH as PRESETS

# (name, optimizer flags); the hypergradient is timed for those that learn something
OPTIMIZERS = [
    ("stock adam", ["--optimizer", "adam"]),
    ("guided_adam nothing", ["--optimizer", "guided_adam"]),
    ("guided_adam nothing, per-tensor loop", ["--optimizer", "guided_adam", "--guided-per-tensor-loop"]),
    ("guided_adam alpha,beta1", ["--optimizer", "guided_adam", "--guided-hparams", "alpha,beta1"]),
    ("guided_adam alpha,beta1, per-tensor loop", ["--optimizer", "guided_adam", "--guided-hparams",
                                                  "alpha,beta1", "--guided-per-tensor-loop"]),
    ("guided_lamb nothing", ["--optimizer", "guided_lamb"]),
    ("guided_lamb alpha,beta1", ["--optimizer", "guided_lamb", "--guided-hparams", "alpha,beta1"]),
]


def config(args, flags):
    parser = options.get_training_parser()
    argv = [args.data, "--user-dir", str(PLUGIN), "--task", "guided_translation",
            *PRESETS[args.device]["model"].split(), "--max-tokens", "2048", "--lr", "1e-3", *flags]
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data", default=str(OFFLINE_CORPUS / "bin"))
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (the first 5 are warm-up)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    cfg = config(args, [])
    torch.manual_seed(0)
    model = tasks.setup_task(cfg.task).build_model(cfg.model).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    guide_grads = [torch.randn_like(p) * 1e-3 for p in params]
    optimizers = {name: build_optimizer(config(args, flags).optimizer, params) for name, flags in OPTIMIZERS}
    for p, g in zip(params, grads):
        p.grad = g
    step_ms = {name: [] for name in optimizers}
    hyper_ms = {name: [] for name, opt in optimizers.items()
                if getattr(opt, "guided", None) is not None and opt.guided.learned.names}
    for round_ in range(args.rounds):
        for name, opt in optimizers.items():
            sync()
            start = time.perf_counter()
            opt.step()
            sync()
            step_ms[name].append(1000 * (time.perf_counter() - start))
            if name in hyper_ms:
                sync()
                start = time.perf_counter()
                hypergrad = opt.guided.hypergradient(guide_grads)
                sync()
                hyper_ms[name].append(1000 * (time.perf_counter() - start))
                assert torch.isfinite(hypergrad).all()
    stock = type(optimizers["stock adam"]._optimizer)
    print(f"- device: {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'CPU'}; "
          f"{sum(p.numel() for p in params) / 1e6:.2f}M parameters in {len(params)} tensors, fp32; "
          f"stock adam is {stock.__module__}.{stock.__name__}; medians of {args.rounds - 5} interleaved rounds")
    print("\n| optimizer | step ms | step / stock adam | hypergradient ms |\n|---|---|---|---|")
    base = statistics.median(step_ms["stock adam"][5:])
    for name, times in step_ms.items():
        median = statistics.median(times[5:])
        hyper = f"{statistics.median(hyper_ms[name][5:]):.2f}" if name in hyper_ms else ""
        print(f"| {name} | {median:.2f} | {median / base:.3f} | {hyper} |")


if __name__ == "__main__":
    main()
