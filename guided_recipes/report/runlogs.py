"""Read the runs of scripts/nmt_recipe.py (fairseq's --log-file lines and run.json) and of
plain fairseq-train (its console output or --log-file, in --log-format json or simple)."""
import json
import re
from pathlib import Path

from .logkeys import LEARNED_PREFIX, NUM_UPDATES, is_learned

ORDER = ["base", "alpha", "beta1", "alpha+beta1", "schedulefree", "prodigy"]


# fairseq's --log-format simple: "epoch 001:     10 / 123 loss=8.2, ..., num_updates=10" for
# train_inner, "epoch 001 | valid on 'valid' subset | loss 8.3 | ... | num_updates 10" for a
# validation (console lines carry "... | INFO | train_inner | " before them)
SIMPLE_INNER = re.compile(r"epoch \d+:\s+\d+ / \d+ (\S+=.*)$")
SIMPLE_VALID = re.compile(r"epoch \d+ \| valid on '([^']+)' subset \| (.*)$")


def simple_row(line: str, tag: str):
    """The fields of a --log-format simple line of kind `tag` (values as strings, as json's), or None."""
    if tag == "train_inner":
        match = SIMPLE_INNER.search(line)
        return dict(kv.split("=", 1) for kv in match.group(1).split(", ")) if match else None
    match = SIMPLE_VALID.search(line)
    if match and match.group(1) == tag:
        return dict(kv.split(" ", 1) for kv in match.group(2).split(" | "))
    return None


def log_rows(log_file: Path, tag: str):
    """fairseq log rows of one kind ('train_inner', 'valid') as dicts, from console output
    ("... | valid | {...}") or a --log-file (bare JSON), in --log-format json or simple; a
    validation's fields without their "valid_" prefix. A resumed run appends to its log: the
    rows an interrupted attempt wrote past the checkpoint it resumed from are replaced by the
    resumed attempt's (and fairseq's --log-file, which repeats lines from the second epoch on,
    is read once)."""
    rows = []
    for line in log_file.read_text(errors="replace").splitlines():
        if f"| {tag} |" in line and "{" in line:
            row = json.loads(line[line.index("{"):])
            rows.append(row if tag == "train_inner" else _unprefixed(row, tag))
        elif (row := simple_row(line, tag)) is not None:
            rows.append(row)
        elif line.startswith('{"') and line.endswith("}"):  # not the config's python repr
            row = json.loads(line)
            if tag == "train_inner" and "update" in row and "num_updates" in row:
                rows.append(row)
            elif f"{tag}_num_updates" in row and tag != "train_inner":
                rows.append(_unprefixed(row, tag))
    return _latest_attempt(rows)


def _unprefixed(row: dict, tag: str) -> dict:
    """fairseq's json format prefixes a validation's fields with its subset ("valid_loss")."""
    return {k[len(tag) + 1:]: v for k, v in row.items() if k.startswith(tag + "_")}


def _latest_attempt(rows):
    kept = []
    for row in rows:
        update = int(row.get("num_updates", -1))
        while kept and update >= 0 and int(kept[-1].get("num_updates", -1)) >= update:
            kept.pop()  # superseded: a later attempt logged this update again
        kept.append(row)
    return kept


def find_runs(runs_dir: Path):
    """[(variant, seed, run folder)] of the finished runs, in the paper's row order."""
    runs = []
    for info in sorted(Path(runs_dir).glob("*/run.json")):
        meta = json.loads(info.read_text())
        runs.append((meta["variant"], meta["seed"], info.parent))
    return sorted(runs, key=lambda r: (ORDER.index(r[0]) if r[0] in ORDER else 99, r[1]))


def find_logs(path: Path):
    """[(label, log file)] of the runs under `path`: a log file itself; a folder of the
    recipe's runs (run.json names variant and seed, the log is train.log); otherwise any
    folder's *.log files, `path` and its subfolders (plain fairseq-train runs, labelled by
    folder)."""
    path = Path(path)
    if path.is_file():
        return [(path.parent.name, path)]
    recipe = [(f"{variant} seed {seed}", run / "train.log") for variant, seed, run in find_runs(path)]
    if recipe:
        return [(label, log) for label, log in recipe if log.exists()]
    found = []
    for folder in [path] + sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        logs = sorted(folder.glob("*.log"))
        found += [(folder.name if len(logs) == 1 else f"{folder.name}/{log.stem}", log) for log in logs]
    return found


def learned_curve(run_dir: Path, key: str):
    """[(update, value)] of a learned hyper-parameter ('guided_alpha', 'guided_beta1') from
    the run's train.log; [] when the run did not learn it."""
    return learned_curves(run_dir, key).get(key, [])


def learned_curves(run_dir: Path, prefix: str = LEARNED_PREFIX) -> dict:
    """{field: [(update, value)]} of every learned value logged whose key starts with
    `prefix` ('guided_alpha', or 'guided_alpha/encoder' ... with --guided-groups; not the
    plugin's other 'guided_' keys, logkeys.is_learned)."""
    log = Path(run_dir) / "train.log"
    out = {}
    for row in log_rows(log, "train_inner") if log.exists() else []:
        for key, value in row.items():
            if key.startswith(prefix) and is_learned(key):
                out.setdefault(key, []).append((int(row[NUM_UPDATES]), float(value)))
    return out
