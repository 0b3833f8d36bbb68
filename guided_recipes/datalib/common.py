"""Stage bookkeeping, errors and text-file helpers shared by every stage."""

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path


class DataError(Exception):
    """A problem the user can fix (missing file, bad option); printed as one line."""


class Stage:
    """Runs a stage's work once and skips it while nothing it depends on has changed.

    The stamp records a signature of the stage's parameters and its input files (size and
    mtime) and the size/mtime of every output. A rerun is skipped only if all of that still
    matches, so changing an option, touching an input or damaging an output redoes the
    stage, and a redone stage makes every later stage redo its work too.
    """

    def __init__(self, dest, name, params, inputs, outputs):
        self.dest = Path(dest)
        self.name = name
        self.params = params
        self.inputs = [Path(p) for p in inputs]
        self.outputs = [Path(p) for p in outputs]
        self.stamp = self.dest / ".stamps" / f"{name}.json"

    def _rel(self, path):
        # Relative to DEST where possible, so a moved DEST stays up to date.
        try:
            return str(path.resolve().relative_to(self.dest.resolve()))
        except ValueError:
            return str(path.resolve())

    def _signature(self):
        for p in self.inputs:
            if not p.is_file():
                raise DataError(f"{self.name}: missing input file {p}")
        state = {"params": self.params,
                 "inputs": {self._rel(p): _file_state(p) for p in self.inputs}}
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()

    def _outputs_state(self):
        return {self._rel(p): _file_state(p) if p.is_file() else None for p in self.outputs}

    def run(self, work):
        """work() does the stage and returns a one-line summary with its counts."""
        signature = self._signature()
        if self.stamp.is_file():
            old = json.loads(self.stamp.read_text())
            if old["signature"] == signature and old["outputs"] == self._outputs_state():
                print(f"[{self.name}] skip: up to date ({old['summary']})", flush=True)
                return
        start = time.time()
        summary = work()
        missing = [str(p) for p in self.outputs if not p.is_file()]
        if missing:
            raise DataError(f"{self.name}: produced no {missing[0]}")
        self.stamp.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.stamp) as f:
            json.dump({"signature": signature, "outputs": self._outputs_state(),
                       "summary": summary, "seconds": round(time.time() - start, 2)}, f, indent=1)
        print(f"[{self.name}] done in {time.time() - start:.1f} s: {summary}", flush=True)


def _file_state(path):
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


@contextlib.contextmanager
def atomic_write(path):
    """Write a text file under a temporary name and rename it into place only on success,
    so an interrupted stage never leaves a complete-looking output behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:  # a failed read upstream must not leave a .tmp behind
        tmp.unlink(missing_ok=True)
        raise


def read_lines(path):
    """Lines without their newline. Only '\\n' ends a line: a stray '\\r' or U+2028 inside a
    sentence must not shift one side of a parallel corpus against the other."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


def read_pairs(src_path, tgt_path):
    src_it, tgt_it = read_lines(src_path), read_lines(tgt_path)
    for s in src_it:
        t = next(tgt_it, None)
        if t is None:
            raise DataError(f"{src_path} has more lines than {tgt_path}")
        yield s, t
    if next(tgt_it, None) is not None:
        raise DataError(f"{tgt_path} has more lines than {src_path}")


def write_pairs(pairs, src_path, tgt_path):
    """Write (src, tgt) pairs to two line-aligned files; returns the count."""
    n = 0
    with atomic_write(src_path) as fs, atomic_write(tgt_path) as ft:
        for s, t in pairs:
            fs.write(s + "\n")
            ft.write(t + "\n")
            n += 1
    return n


def count_lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
