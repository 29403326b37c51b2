#!/usr/bin/env bash
# expert training of UniFormer-B32 (Something-Something-V2 init), then the test of best.pyth configured in config.yaml.
# Run from anywhere; extra KEY VALUE pairs override the config, e.g. NUM_GPUS 8 DATA.PATH_PREFIX /data/ug2
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/python.sh
exec "$PYTHON" tools/run_net.py --cfg exp_experts/uniformer_b32_ssv2/config.yaml "$@"
