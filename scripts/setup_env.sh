#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment from nothing.
#   bash scripts/setup_env.sh [VENV_DIR]      (default: .venv in the repository root)
# Every pip call runs with requirements/constraints.txt, so the pinned torch is never
# replaced. A finished environment is stamped with the hash of the requirement files and
# reused as long as they are unchanged, so a second call costs a second.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$repo/.venv}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
fairseq_version=0.12.3.1
fairseq_sdist_sha256=c607577a54ab30e2ee0f0b0a754ea5cdbc6ad0a9f99a1726638a2201445bc1cc

stamp_of() { cat "$repo"/requirements/*.txt "$repo/pyproject.toml" "$repo/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1; }
stamp=$(stamp_of)
if [ -f "$venv/.fairseq_guided_stamp" ] && [ "$(cat "$venv/.fairseq_guided_stamp")" = "$stamp" ]; then
  echo "setup_env: $venv is up to date"
  exit 0
fi

start=$(date +%s)
"$python" -c 'import sys; assert sys.version_info[:2] >= (3, 11), sys.version' \
  || { echo "setup_env: Python >= 3.11 is needed (found $("$python" --version))" >&2; exit 1; }
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
constraints=(-c "$repo/requirements/constraints.txt")

echo "setup_env: [1/4] torch and build tools"
"${pip[@]}" install -q "${constraints[@]}" -r "$repo/requirements/build.txt"
echo "setup_env: [2/4] runtime dependencies"
"${pip[@]}" install -q "${constraints[@]}" -r "$repo/requirements/runtime.txt"

echo "setup_env: [3/4] fairseq-fixed $fairseq_version from its sdist (builds its C++/Cython parts, a few minutes)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${pip[@]}" download -q --no-deps --no-build-isolation --no-binary fairseq-fixed -d "$work" "fairseq-fixed==$fairseq_version"
sdist=$(ls "$work"/fairseq*fixed-"$fairseq_version".tar.gz)
echo "$fairseq_sdist_sha256  $sdist" | sha256sum -c --quiet - \
  || { echo "setup_env: sha256 of $sdist does not match" >&2; exit 1; }
"${pip[@]}" install -q --no-build-isolation --no-deps "${constraints[@]}" "$sdist"

echo "setup_env: [4/4] fairseq_guided (editable)"
"${pip[@]}" install -q --no-build-isolation --no-deps -e "$repo"

"$venv/bin/python" - <<'PY'
import torch, fairseq, numpy
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
print(f"setup_env: torch {torch.__version__}, fairseq {fairseq.__version__}, numpy {numpy.__version__}")
PY
echo "$stamp" > "$venv/.fairseq_guided_stamp"
echo "setup_env: done in $(( $(date +%s) - start )) s"
