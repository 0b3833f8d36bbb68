"""--guided-groups: which parameters share a learned value.

Over parameter names alone (no fairseq, no tensors), so the grouping is a function of
`named_parameters()` alone and can be stored in a checkpoint and compared on resume
(check_same_grouping). The flag's value is parsed by flags.parse_groups.

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

from .hypergrad.hyperparams import LearnedStateError

FLAG = "--guided-groups"
GLOBAL = "global"
OTHER = "other"
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


def check_same_grouping(saved, current):
    """Refuse a checkpoint whose parameters were grouped otherwise (before torch's own
    param-group check, whose message would not say why). `saved`, `current`: the
    Grouping.as_dict() records, or None for global values."""
    if saved == current:
        return
    def said(record):
        return "--guided-groups global" if record is None else \
            f"--guided-groups {record['spec']!r} (groups {', '.join(record['groups'])})"
    why = ""
    if saved is not None and current is not None and saved["groups"] == current["groups"]:
        moved = [n for n in current["assignment"] if saved["assignment"].get(n) != current["assignment"][n]]
        gone = [n for n in saved["assignment"] if n not in current["assignment"]]
        example = (moved or gone)[0] if moved or gone else None
        if example is not None:
            why = (f"; the same groups now hold other parameters ({len(moved) + len(gone)} differ, "
                   f"e.g. {example}: {saved['assignment'].get(example)} -> "
                   f"{current['assignment'].get(example)})")
    raise LearnedStateError(f"the checkpoint was trained with {said(saved)} but this run has "
                            f"{said(current)}{why}; resume with the checkpoint's --guided-groups, or pass "
                            f"--reset-optimizer to start the optimizer and the learned values afresh")
