#!/usr/bin/env bash
# The method, measured: sets up .venv if needed, then runs tools/benchmark_method.py (every step of the method on
# three seeds of an 11-class synthetic dark-video set; --help lists the options: --workdir, --seeds, --stages).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python tools/benchmark_method.py "$@"
