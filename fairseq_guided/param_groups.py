"""--guided-groups: which parameters share a learned value.

Pure Python over parameter names (no fairseq, no torch), so the grouping is a function of
`named_parameters()` alone and can be stored in a checkpoint and compared on resume.

Forms of the flag:
    global                  one value of each learned name for the whole model (default)
    embed,encoder,decoder   named module prefixes: NAME takes a parameter whose dotted name
                            holds NAME from the start of a part up to a '.' or '_' (embed
                            takes encoder.embed_tokens.weight, encoder.layers.0 takes
                            encoder.layers.0.fc1.weight); the first listed group that
                            matches wins
    layer                   one group per transformer layer (encoder.layers.0, ...), plus
                            embed (embeddings) and output (the output projection)
    NAME=REGEX;NAME=REGEX   regular expressions searched in the parameter name, first
                            match wins
Parameters no group takes go to a group `other` (only when there are some).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

FLAG = "--guided-groups"
GLOBAL = "global"
OTHER = "other"
_GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_LAYER = re.compile(r"^(.*?(?:^|\.)layers\.\d+)\.")


@dataclass(frozen=True)
class GroupSpec:
    """A parsed --guided-groups value other than global."""
    text: str
    kind: str  # "prefix", "layer" or "regex"
    patterns: tuple  # (group name, compiled regex) for prefix and regex


@dataclass
class Grouping:
    """Which group each parameter is in, for the names it was built from."""
    spec: str
    groups: list  # group names, in the order of the learned values
    param_names: list
    group_of: list  # index into groups, one per parameter name
    # (parameter name, [the other listed groups that match it too]) for each parameter more
    # than one group matches: the first listed takes it, which a user may not expect
    # (`encoder` takes the decoder's cross-attention, decoder.layers.0.encoder_attn.*)
    contested: list = None

    def members(self, group: int) -> list:
        return [n for n, g in zip(self.param_names, self.group_of) if g == group]

    def unmatched(self) -> list:
        """Parameters no named group took (they share the `other` group)."""
        return self.members(self.groups.index(OTHER)) if OTHER in self.groups else []

    def empty_groups(self) -> list:
        return [name for g, name in enumerate(self.groups) if g not in set(self.group_of)]

    def as_dict(self) -> dict:
        """What a checkpoint stores: a resume must rebuild exactly this."""
        return {"spec": self.spec, "groups": list(self.groups),
                "assignment": {n: self.groups[g] for n, g in zip(self.param_names, self.group_of)}}


def parse_groups(text) -> GroupSpec | None:
    """The flag's value, checked; None for global. Raises ValueError naming the flag."""
    text = str(text if text is not None else "").strip()
    if text == GLOBAL:
        return None
    usage = (f"use {GLOBAL}, layer, a list of module prefixes like embed,encoder,decoder, or "
             f"NAME=REGEX;NAME=REGEX")
    if not text:
        raise ValueError(f"{FLAG}: empty; {usage}")
    if text == "layer":
        return GroupSpec(text, "layer", ())
    if "=" in text:
        items = [i.strip() for i in text.split(";")]
        pairs = []
        for item in items:
            name, sep, regex = item.partition("=")
            if not sep or not regex.strip():
                raise ValueError(f"{FLAG}: expected NAME=REGEX items separated by ';'; got {item!r} "
                                 f"in {text!r}")
            try:
                pairs.append((name.strip(), re.compile(regex.strip())))
            except re.error as e:
                raise ValueError(f"{FLAG}: group {name.strip()!r}: bad regular expression "
                                 f"{regex.strip()!r} ({e})") from None
        kind = "regex"
    else:
        items = [i.strip() for i in text.split(",")]
        if "" in items:
            raise ValueError(f"{FLAG}: an empty group name in {text!r}; {usage}")
        # NAME at the start of a dotted part, then a '.' or '_' (or the end of the name)
        pairs = [(n, re.compile(r"(?:^|\.)" + re.escape(n) + r"(?:[._]|$)")) for n in items]
        kind = "prefix"
    names = [n for n, _ in pairs]
    for name in names:
        if not _GROUP_NAME.match(name):
            raise ValueError(f"{FLAG}: group name {name!r} may hold only letters, digits, '_', "
                             f"'.' and '-' (it becomes a log key); {usage}")
        if name in (OTHER, GLOBAL, "layer"):
            raise ValueError(f"{FLAG}: {name!r} cannot name a group ({OTHER!r} collects the "
                             f"parameters no group takes)")
    if len(set(names)) != len(names):
        raise ValueError(f"{FLAG}: a group is named twice in {text!r}")
    return GroupSpec(text, kind, tuple(pairs))


def _layer_group(name: str) -> str:
    parts = name.split(".")
    if any(p.startswith("embed") or p == "layernorm_embedding" for p in parts):
        return "embed"
    if "output_projection" in parts:
        return "output"
    match = _LAYER.match(name)
    return match.group(1) if match else OTHER


def assign_groups(spec: GroupSpec, param_names: list) -> Grouping:
    """Each parameter's group. Listed groups keep their order (and exist even when empty);
    `layer` groups come as embed, the layers in model order, output; `other` is last."""
    if spec.kind == "layer":
        keys = [_layer_group(n) for n in param_names]
        layers = list(dict.fromkeys(k for k in keys if k not in ("embed", "output", OTHER)))
        groups = [g for g in ["embed"] + layers + ["output"] if g in keys]
    else:
        groups = [n for n, _ in spec.patterns]
        matches = [[g for g, regex in spec.patterns if regex.search(n)] for n in param_names]
        keys = [m[0] if m else OTHER for m in matches]
        contested = [(n, m[1:]) for n, m in zip(param_names, matches) if len(m) > 1]
    if OTHER in keys:
        groups.append(OTHER)
    return Grouping(spec.text, groups, list(param_names), [groups.index(k) for k in keys],
                    contested if spec.kind != "layer" else [])


def describe(grouping: Grouping, sizes: list) -> list:
    """Log lines for the start of a run: each group's size, then what matched nothing."""
    lines = []
    for g, name in enumerate(grouping.groups):
        count = sum(s for s, k in zip(sizes, grouping.group_of) if k == g)
        tensors = sum(1 for k in grouping.group_of if k == g)
        lines.append(f"{FLAG} {grouping.spec!r}: group {name}: {tensors} tensors, {count:,} parameters")
    return lines


def warnings_for(grouping: Grouping) -> list:
    out = []
    unmatched = grouping.unmatched()
    if unmatched:
        shown = ", ".join(unmatched[:8]) + (f" and {len(unmatched) - 8} more" if len(unmatched) > 8 else "")
        out.append(f"{FLAG}: {len(unmatched)} parameter tensors match no group and share the "
                   f"group {OTHER!r}: {shown}")
    if grouping.contested:
        shown = ", ".join(f"{n} (to {grouping.groups[grouping.group_of[grouping.param_names.index(n)]]}, "
                          f"not {'/'.join(others)})" for n, others in grouping.contested[:4])
        more = len(grouping.contested) - 4
        out.append(f"{FLAG}: {len(grouping.contested)} parameter tensors match more than one group; the "
                   f"first listed takes each: {shown}" + (f" and {more} more" if more > 0 else "")
                   + "; list groups in another order, or use NAME=REGEX, to place them otherwise")
    for name in grouping.empty_groups():
        out.append(f"{FLAG}: group {name!r} matches no parameter; its values stay at their "
                   f"initial setting")
    return out
