#!/usr/bin/env bash
# Inference with exp_pseudo_stage4/uniformer_b32_ssv2/best.pyth (gamma 0.25 TTA): writes exp_pseudo_stage4/uniformer_b32_ssv2/testx32x224x3x3.pkl and testx32x224x1x3.pkl for test_ensemble_vote.py.
# Extra KEY VALUE pairs override the config, e.g. TEST.CHECKPOINT_FILE_PATH my.pyth NUM_GPUS 1
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/python.sh
exec "$PYTHON" tools/run_net.py --cfg exp_pseudo_stage4/uniformer_b32_ssv2/config.yaml TRAIN.ENABLE False NUM_GPUS 2 "$@"
