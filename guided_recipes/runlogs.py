"""Read the runs of scripts/nmt_recipe.py: fairseq's --log-file lines and run.json."""
import json
from pathlib import Path

ORDER = ["base", "alpha", "beta1", "alpha+beta1", "schedulefree", "prodigy"]


def log_rows(log_file: Path, tag: str):
    """fairseq --log-format json rows of one kind ('train_inner', 'valid') as dicts, from
    console output ("... | valid | {...}") or a --log-file (bare JSON, valid fields
    prefixed "valid_"). A resumed run appends to its log: the rows an interrupted attempt
    wrote past the checkpoint it resumed from are replaced by the resumed attempt's."""
    rows = []
    for line in log_file.read_text().splitlines():
        if f"| {tag} |" in line and "{" in line:
            rows.append(json.loads(line[line.index("{"):]))
        elif line.startswith('{"') and line.endswith("}"):  # not the config's python repr
            row = json.loads(line)
            if tag == "train_inner" and "update" in row and "num_updates" in row:
                rows.append(row)
            elif f"{tag}_num_updates" in row and tag != "train_inner":
                rows.append({k[len(tag) + 1:]: v for k, v in row.items() if k.startswith(tag + "_")})
    return _latest_attempt(rows)


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


def learned_curve(run_dir: Path, key: str):
    """[(update, value)] of a learned hyper-parameter ('guided_alpha', 'guided_beta1') from
    the run's train.log; [] when the run did not learn it."""
    return learned_curves(run_dir, key).get(key, [])


def learned_curves(run_dir: Path, prefix: str) -> dict:
    """{field: [(update, value)]} of every logged field starting with `prefix` (e.g.
    'guided_' gives 'guided_alpha', or 'guided_alpha/encoder' ... with --guided-groups)."""
    log = Path(run_dir) / "train.log"
    out = {}
    for row in log_rows(log, "train_inner") if log.exists() else []:
        for key, value in row.items():
            if key.startswith(prefix):
                out.setdefault(key, []).append((int(row["num_updates"]), float(value)))
    return out
