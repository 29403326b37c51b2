#!/usr/bin/env bash
# pseudo-label stage 1 training of MViT-B-24 32x3 (Kinetics-600 init), then the test of best.pyth configured in config.yaml.
# Run from anywhere; extra KEY VALUE pairs override the config, e.g. NUM_GPUS 8 DATA.PATH_PREFIX /data/ug2
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/python.sh
exec "$PYTHON" tools/run_net.py --cfg exp_pseudo_stage1/mvit_b32_k600/config.yaml "$@"
