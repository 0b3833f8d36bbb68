"""The guided step's cost against plain fairseq adam, every configuration in one process,
interleaved: a benchmark that a busy machine does not bias.

    python user_scripts/bench_interleaved.py --device cpu [--rounds 12 --segment-updates 10]

Each configuration of benchmark.py (the same fairseq-train flags, the same model and data)
gets its own fairseq Trainer in this process, built as fairseq-train builds it. After
--warmup-updates updates each, they train in turn in segments of --segment-updates updates:
one round is plain adam, then every other configuration (their order rotated each round),
and a last plain adam segment closes the run (after --rounds rounds, or the first round
that ends past --minutes). Each segment is timed whole (data, forward,
backward, step, meta step). A configuration's ratio in round r is its segment's time over
the mean of the two plain adam segments around it (round r's and round r+1's), so a slow
period of the machine lands on both sides of a ratio. The table gives, per configuration,
the median ratio over rounds and its spread (quartiles, min-max); the repeated plain adam
("plain adam, again") shows what is left of the noise. Whole runs (benchmark.py) compare
processes minutes apart: their ratios drifted by up to 16% here.

Learning runs time nothing extra (no --guidance-time-pass): a segment costs what a user's
update costs. Writes --out (markdown) and the segment times beside it (.json).
"""
import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from ..common import OFFLINE_CORPUS
from ..presets import BENCH
from .benchmark import bench_command, configurations, selected

PLAIN = "plain adam"
# the CPU table of BENCHMARKS.md: every configuration but the per-layer groups and the
# tuning-free optimizers (benchmark.py --configs picks those)
DEFAULT_CONFIGS = r"^(?!.*(groups=layer|schedulefree|prodigy))"


class Run:
    """One configuration's fairseq Trainer and its endless stream of training batches."""

    def __init__(self, name, argv):
        import numpy as np
        from fairseq import checkpoint_utils, options, tasks, utils
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf
        from fairseq.trainer import Trainer

        cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
        utils.import_user_module(cfg.common)
        np.random.seed(cfg.common.seed)
        utils.set_torch_seed(cfg.common.seed)
        task = tasks.setup_task(cfg.task)
        self.name, self.cfg = name, cfg
        self.trainer = Trainer(cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion))
        _, self.epoch_itr = checkpoint_utils.load_checkpoint(cfg.checkpoint, self.trainer)  # as fairseq-train
        self._batches = self._next_epoch()

    def _next_epoch(self):
        from fairseq.data import iterators

        itr = self.epoch_itr.next_epoch_itr(fix_batches_to_gpus=False, shuffle=True)
        self.trainer.begin_epoch(self.epoch_itr.epoch)
        return iterators.GroupedIterator(itr, 1)

    def train(self, updates: int, sync) -> float:
        """Seconds for `updates` training updates."""
        sync()
        start = time.perf_counter()
        done = 0
        while done < updates:
            if not self._batches.has_next():
                self._batches = self._next_epoch()
            if self.trainer.train_step(next(self._batches)) is not None:
                done += 1
        sync()
        return time.perf_counter() - start


def schedule(names: list, rounds: int) -> list:
    """[(round, name)]: each round plain adam first, then the others rotated by the round;
    a closing plain adam segment (round = rounds)."""
    others = [n for n in names if n != PLAIN]
    order = []
    for r in range(rounds):
        k = r % len(others) if others else 0
        order += [(r, PLAIN)] + [(r, n) for n in others[k:] + others[:k]]
    return order + [(rounds, PLAIN)]


def ratios(segments: list) -> dict:
    """{name: [ratio in each round]} from [{"round", "config", "seconds"}]: a segment over
    the mean of plain adam's segments of its round and the next."""
    plain = {s["round"]: s["seconds"] for s in segments if s["config"] == PLAIN}
    out = {}
    for s in segments:
        if s["config"] == PLAIN and s["round"] + 1 not in plain:
            continue  # the closing segment
        reference = (plain[s["round"]] + plain[s["round"] + 1]) / 2
        out.setdefault(s["config"], []).append(s["seconds"] / reference)
    return out


def rows(segments: list, updates_per_segment: int) -> list:
    """The table: per configuration (in first-seen order) the median ratio to plain adam,
    its quartiles and min-max over rounds, the segment count, and the median update ms."""
    per = ratios(segments)
    out = []
    for name, rs in per.items():
        q1, _, q3 = statistics.quantiles(rs, n=4, method="inclusive") if len(rs) > 1 else (rs[0],) * 3
        seconds = [s["seconds"] for s in segments if s["config"] == name]
        out.append({"config": name, "median": statistics.median(rs), "q1": q1, "q3": q3, "min": min(rs),
                    "max": max(rs), "segments": len(rs),
                    "update_ms": 1000 * statistics.median(seconds) / updates_per_segment})
    return out


def markdown(table: list, meta: dict) -> str:
    lines = [f"- device: {meta['device']}; date: {meta['date']}; torch {meta['torch']}, fairseq {meta['fairseq']}, "
             f"python {meta['python']}; {meta['rounds']} rounds of {meta['segment_updates']}-update segments "
             f"after {meta['warmup_updates']} warm-up updates each; wall {meta['wall_seconds'] / 60:.1f} min",
             f"- command: `{meta['command']}`",
             "- time / plain: a segment's time over the mean of the plain adam segments before and after it; "
             "median over rounds, quartiles and min-max", "",
             "| configuration | update ms (median) | time / plain, median | quartiles | min - max | segments |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['config']} | {r['update_ms']:.1f} | {r['median']:.3f} | {r['q1']:.3f} - {r['q3']:.3f} | "
                     f"{r['min']:.3f} - {r['max']:.3f} | {r['segments']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data", default=str(OFFLINE_CORPUS / "bin"), help="fairseq-binarized corpus with a guide split")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="regular expression on benchmark.py's configuration names (plain adam always "
                             "runs; default: the CPU table's rows)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--segment-updates", type=int, default=10,
                        help="updates a segment; a multiple of every --guidance-interval measured (10), so "
                             "each segment holds the same number of meta steps")
    parser.add_argument("--warmup-updates", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop after the first full round that ends past this many minutes (a busy machine)")
    parser.add_argument("--model", default=None, help="fairseq model flags instead of the device's preset's")
    parser.add_argument("--max-tokens", type=int, default=None, help="instead of the preset's")
    parser.add_argument("--out", default=None, help="write the markdown table here, the segments beside it (.json)")
    args = parser.parse_args(argv)
    for flag in ("rounds", "segment_updates"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: not found (bash scripts/prepare_offline_corpus.sh makes the default)")
    return args


def main(argv=None):
    import fairseq
    import torch

    args = parse_args(argv)
    preset = dict(BENCH[args.device])
    preset.update({k: v for k, v in (("model", args.model), ("max_tokens", args.max_tokens)) if v is not None})
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    start = time.time()
    flags = SimpleNamespace(device=args.device, updates=10 ** 9, log_interval=10 ** 9)
    chosen = selected(configurations(args.device), args.configs)
    with tempfile.TemporaryDirectory() as save_dir:
        runs = {}
        for name, *config in chosen:
            argv = [args.data, *bench_command(flags, preset, *config, timed=False), "--save-dir", save_dir]
            runs[name] = Run(name, argv)
        print(f"[interleaved] {len(runs)} configurations built; warm-up {args.warmup_updates} updates each", flush=True)
        for run in runs.values():
            run.train(args.warmup_updates, sync)
        segments, deadline = [], time.time() + 60 * args.minutes if args.minutes else None
        for r, name in schedule(list(runs), args.rounds):
            seconds = runs[name].train(args.segment_updates, sync)
            segments.append({"round": r, "config": name, "seconds": seconds})
            print(f"[interleaved] round {r}: {name} {1000 * seconds / args.segment_updates:.1f} ms/update", flush=True)
            if name == PLAIN and r > 0 and deadline is not None and time.time() > deadline:
                break  # --minutes: this plain adam segment closes the last full round
    table = rows(segments, args.segment_updates)
    command = "python user_scripts/bench_interleaved.py " + " ".join(argv_of(args))
    meta = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)",
            "date": str(datetime.date.today()), "torch": torch.__version__, "fairseq": fairseq.__version__,
            "python": sys.version.split()[0], "rounds": segments[-1]["round"], "segment_updates": args.segment_updates,
            "warmup_updates": args.warmup_updates, "wall_seconds": time.time() - start, "command": command,
            "threads": torch.get_num_threads()}
    text = markdown(table, meta)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # a new folder is a common --out
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"meta": meta, "preset": preset, "segments": segments, "table": table}, indent=1))
    return table


def argv_of(args) -> list:
    out = ["--device", args.device, "--rounds", str(args.rounds), "--segment-updates", str(args.segment_updates),
           "--warmup-updates", str(args.warmup_updates)]
    if args.configs != DEFAULT_CONFIGS:
        out += ["--configs", shlex.quote(args.configs)]
    if args.model is not None:
        out += ["--model", shlex.quote(args.model)]
    if args.max_tokens is not None:
        out += ["--max-tokens", str(args.max_tokens)]
    if args.minutes is not None:
        out += ["--minutes", f"{args.minutes:g}"]
    return out
