#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md ("GPU figures") in one command on a CUDA machine:
#   bash benchmarks/gpu_figures.sh [OUT.json]      (default OUT.json: ./gpu_figures.json)
# runs benchmarks/gpu_figures.py with its defaults (uniformer_b32, mvit_b32, sf_r101 at 32x224x224; training step
# and 3x3 test, fp32 and bf16, both attention kernels; DataLoader with 0/2/4/8 workers; then channels-last and
# torch.compile: the whole set takes longer than one call, see docs/PERFORMANCE.md). The script stops starting
# rows after 7 minutes (--max-seconds 420, rows left are listed as skipped) and `timeout` ends it after 9 minutes
# at most; the JSON is rewritten after every row, so it keeps whatever was measured. Extra arguments after OUT.json
# go to the script (e.g. --batch 8).
set -euo pipefail
out="$(realpath -m "${1:-gpu_figures.json}")"
shift || true
cd "$(dirname "$0")/.."
source scripts/python.sh
exec timeout --kill-after=15s 540s "$PYTHON" benchmarks/gpu_figures.py --max-seconds 420 --json "$out" "$@"
