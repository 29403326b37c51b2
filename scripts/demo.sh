#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the whole method end to end on a generated dark-video set
# with tiny models (tools/demo.py; --help lists the options: --quick, --workdir, --seed, --stages, --models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python tools/demo.py "$@"
