#!/usr/bin/env bash
# The main job: set up, then run the bundled study end to end (`impactstudy run`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/impactstudy run "$@"
