"""Make a results folder independent of the machine it ran on: every absolute path under
the clone the runs were made in becomes a path relative to the repository.

    python -m guided_recipes.portable RESULTS_DIR --root /path/of/that/clone [--root ...]

Commands and logs (.sh, .log, .stdout, .md, .py, .txt, .csv) get `$REPO/...`, so a
recorded command runs again with `REPO=$(pwd) bash commands.sh` from a checkout (the
recipes hand fairseq absolute paths, as hydra changes into the run folder); JSON values
get the bare relative path (`runs/main_job-cpu/base-seed1`). Prints how many files and
paths it rewrote; a second call rewrites nothing.
"""
import argparse
import json
from pathlib import Path

TEXT = {".sh", ".log", ".stdout", ".md", ".py", ".txt", ".csv", ".out", ".yaml"}


def _rewrite_text(text: str, roots, replacement: str) -> tuple:
    count = 0
    for root in roots:
        for old, new in ((root + "/", replacement), (root, replacement.rstrip("/") or ".")):
            count += text.count(old)
            text = text.replace(old, new)
    return text, count


def _rewrite_json(value, roots):
    if isinstance(value, str):
        return _rewrite_text(value, roots, "")
    if isinstance(value, list):
        items = [_rewrite_json(v, roots) for v in value]
        return [v for v, _ in items], sum(c for _, c in items)
    if isinstance(value, dict):
        items = {k: _rewrite_json(v, roots) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, sum(c for _, c in items.values())
    return value, 0


def rewrite(folder: Path, roots) -> dict:
    """{file: paths rewritten} for every file of `folder` that held a path under a root."""
    roots = sorted({str(Path(r)).rstrip("/") for r in roots}, key=len, reverse=True)  # longest first
    changed = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            new, count = _rewrite_json(data, roots)
            if count:
                path.write_text(json.dumps(new, indent=1) + "\n")
        elif path.suffix in TEXT or path.name.endswith((".hyp.en", ".hyp.de")):
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            new, count = _rewrite_text(text, roots, "$REPO/")
            if count:
                path.write_text(new)
        else:
            continue
        if count:
            changed[str(path)] = count
    return changed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--root", action="append", required=True,
                        help="an absolute path of the clone the runs were made in (repeatable)")
    args = parser.parse_args()
    for root in args.root:
        if not Path(root).is_absolute():
            parser.error(f"--root {root}: give the absolute path the records hold")
    changed = rewrite(args.folder, args.root)
    print(f"portable: {len(changed)} files, {sum(changed.values())} paths rewritten under {args.folder}")


if __name__ == "__main__":
    main()
