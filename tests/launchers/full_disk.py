"""A fairseq command line tool in this process on a disk that fills up: a file opened for
writing whose name ends with NAME takes BUDGET bytes, then its write fails with OSError
errno 28 (ENOSPC) after writing what fit, as on a full disk. Deterministic: the fault is
at a known file and byte, never by timing; every other file is written as usual.

    python tests/launchers/full_disk.py NAME BUDGET fairseq-train [its arguments]
"""
import builtins
import errno
import os
import sys


class FillingFile:
    """A file object whose writes fail with ENOSPC once `budget` bytes are written."""

    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, data):
        data = bytes(data)
        if len(data) > self._left:
            self._f.write(data[:self._left])
            self._f.flush()
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def filling_open(name: str, budget: int, real_open=builtins.open):
    """builtins.open, with files written under a name ending in `name` filling up."""
    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and str(file).endswith(name):
            return FillingFile(f, budget)
        return f
    return open_


if __name__ == "__main__":
    name, budget, tool = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    builtins.open = filling_open(name, budget)
    if tool != "fairseq-train":
        sys.exit(f"unknown tool {tool!r}")
    from fairseq_cli.train import cli_main

    sys.argv = [tool] + sys.argv[4:]
    cli_main()
