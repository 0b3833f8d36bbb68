#!/usr/bin/env bash
# The README's first command: build the pinned environment if needed, then run the main
# job (arguments go to scripts/main_job.py, e.g. --preset gpu).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup_env.sh"
exec "$repo/.venv/bin/python" "$repo/scripts/main_job.py" "$@"
