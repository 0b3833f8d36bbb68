#!/usr/bin/env bash
# The README's test command: build the pinned environment if needed (a few minutes the
# first time), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup_env.sh"
cd "$repo"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
