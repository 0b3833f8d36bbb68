"""The one parser of flag values: every guided and tuning-free flag that holds a list or
a tuple is read here, and each error names the flag it was given.

No fairseq: each value is checked when the optimizer is built, before any update.
"""
from __future__ import annotations

import re

from .param_groups import FLAG as GROUPS_FLAG
from .param_groups import GLOBAL, OTHER, GroupSpec

_GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def parse_float_tuple(text, flag: str, length: int) -> tuple[float, ...]:
    """'(0.9, 0.98)' (brackets optional) -> (0.9, 0.98), exactly `length` numbers."""
    try:
        values = tuple(float(x) for x in str(text).strip("()[] ").split(","))
    except ValueError:
        values = ()
    if len(values) != length:
        raise ValueError(f"{flag}: expected {length} comma-separated numbers; got {text!r}")
    return values


def parse_unit_pair(text, flag: str) -> tuple[float, float]:
    """Two numbers, each in [0, 1): a pair of Adam betas."""
    try:
        values = parse_float_tuple(text, flag, 2)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(0 <= b < 1 for b in values):
        raise ValueError(f"{flag}: expected two numbers in [0, 1) like '(0.9, 0.999)'; got {text!r}")
    return values


def parse_name_list(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    """'alpha,beta1' -> ['alpha', 'beta1'], refusing unknown or repeated names."""
    text = str(text or "")
    if text and not text.strip():  # a blank from a script's unset variable: learns nothing silently
        raise ValueError(f"{flag}: {text!r} is only whitespace; list names like 'alpha,beta1', or "
                         f"leave the flag out to learn nothing")
    items = [n.strip() for n in text.split(",")] if text.strip() else []
    if "" in items:  # ',' or 'alpha,,beta1' would silently learn less than asked for
        raise ValueError(f"{flag}: an empty name in {text!r}; list names like 'alpha,beta1', or "
                         f"leave the flag out to learn nothing")
    names = items
    for name in names:
        if name not in allowed:
            raise ValueError(
                f"{flag}: unknown hyper-parameter {name!r}; allowed: {', '.join(allowed)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{flag}: a hyper-parameter is named twice in {text!r}")
    return names


def parse_name_values(text: str, allowed: tuple[str, ...], flag: str) -> dict[str, float]:
    """'alpha=2,beta1=0.5' -> {'alpha': 2.0, 'beta1': 0.5}; refuses what parse_name_list
    refuses (only whitespace, an empty item, a name given twice), which would set less than
    asked for without a word."""
    text = str(text or "")
    if text and not text.strip():
        raise ValueError(f"{flag}: {text!r} is only whitespace; give NAME=VALUE items like "
                         f"'alpha=2', or leave the flag out")
    items = [i.strip() for i in text.split(",")] if text.strip() else []
    if "" in items:
        raise ValueError(f"{flag}: an empty item in {text!r}; give NAME=VALUE items like 'alpha=2,beta1=0.5'")
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in allowed:
            raise ValueError(
                f"{flag}: expected NAME=VALUE with NAME in {', '.join(allowed)}; got {item!r}"
            )
        if name in out:
            raise ValueError(f"{flag}: {name} is given twice in {text!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{flag}: {value!r} is not a number (in {item!r})") from None
    return out


def parse_groups(text) -> GroupSpec | None:
    """--guided-groups (forms: param_groups.py), checked; None for global. Raises
    ValueError naming the flag."""
    text = str(text if text is not None else "").strip()
    if text == GLOBAL:
        return None
    usage = (f"use {GLOBAL}, layer, a list of module prefixes like embed,encoder,decoder, or "
             f"NAME=REGEX;NAME=REGEX")
    if not text:
        raise ValueError(f"{GROUPS_FLAG}: empty; {usage}")
    if text == "layer":
        return GroupSpec(text, "layer", ())
    if "=" in text:
        items = [i.strip() for i in text.split(";")]
        pairs = []
        for item in items:
            name, sep, regex = item.partition("=")
            if not sep or not regex.strip():
                raise ValueError(f"{GROUPS_FLAG}: expected NAME=REGEX items separated by ';'; got {item!r} "
                                 f"in {text!r}")
            try:
                pairs.append((name.strip(), re.compile(regex.strip())))
            except re.error as e:
                raise ValueError(f"{GROUPS_FLAG}: group {name.strip()!r}: bad regular expression "
                                 f"{regex.strip()!r} ({e})") from None
        kind = "regex"
    else:
        items = [i.strip() for i in text.split(",")]
        if "" in items:
            raise ValueError(f"{GROUPS_FLAG}: an empty group name in {text!r}; {usage}")
        # NAME at the start of a dotted part, then a '.' or '_' (or the end of the name)
        pairs = [(n, re.compile(r"(?:^|\.)" + re.escape(n) + r"(?:[._]|$)")) for n in items]
        kind = "prefix"
    names = [n for n, _ in pairs]
    for name in names:
        if not _GROUP_NAME.match(name):
            raise ValueError(f"{GROUPS_FLAG}: group name {name!r} may hold only letters, digits, '_', "
                             f"'.' and '-' (it becomes a log key); {usage}")
        if name in (OTHER, GLOBAL, "layer"):
            raise ValueError(f"{GROUPS_FLAG}: {name!r} cannot name a group ({OTHER!r} collects the "
                             f"parameters no group takes)")
    if len(set(names)) != len(names):
        raise ValueError(f"{GROUPS_FLAG}: a group is named twice in {text!r}")
    return GroupSpec(text, kind, tuple(pairs))
