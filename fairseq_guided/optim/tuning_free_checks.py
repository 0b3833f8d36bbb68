"""Flag checks shared by the tuning-free optimizers: each message names the flag and the
range it allows, and is raised when fairseq builds the optimizer (before any update)."""
from __future__ import annotations

import math

from ..flags import parse_float_tuple


def check(value, ok: bool, flag: str, allowed: str):
    if not ok or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{flag} must be {allowed}; got {value!r}")
    return value


def check_lr(lr_list, name: str) -> float:
    """fairseq's --lr is a list (one per epoch under the fixed schedule); all must be > 0."""
    for lr in lr_list:
        check(lr, lr > 0, "--lr", f"> 0 for {name}")
    return float(lr_list[0])


def check_betas(text, flag: str, beta1_min_open: bool) -> tuple[float, float]:
    beta1, beta2 = parse_float_tuple(text, flag, 2)
    low = "(0, 1)" if beta1_min_open else "[0, 1)"
    check(text, (beta1 > 0 if beta1_min_open else beta1 >= 0) and beta1 < 1, flag, f"two numbers, beta1 in {low}")
    check(text, 0 <= beta2 < 1, flag, "two numbers, beta2 in [0, 1)")
    return beta1, beta2
