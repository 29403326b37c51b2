#!/usr/bin/env bash
# Inference with exp_pseudo_stage2/mvit_b32_k600/best.pyth (gamma 0.25 TTA): writes exp_pseudo_stage2/mvit_b32_k600/total_unlabelx32x224x1x1.pkl for gen_pseudo_tools/generate_pseudo_label_stage3.py.
# Extra KEY VALUE pairs override the config, e.g. TEST.CHECKPOINT_FILE_PATH my.pyth NUM_GPUS 1
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/python.sh
exec "$PYTHON" tools/run_net.py --cfg exp_pseudo_stage2/mvit_b32_k600/config.yaml TRAIN.ENABLE False NUM_GPUS 2 "$@"
