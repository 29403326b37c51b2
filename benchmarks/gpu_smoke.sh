#!/usr/bin/env bash
# The GPU code paths end to end on one GPU (CPU CI never reaches them); steps 1-3 take about 35 s on an H200,
# step 4 a few minutes, most of it compiling:
#   bash benchmarks/gpu_smoke.sh [WORKDIR] [DEVICE_GPUS]     (defaults: a temporary folder, 1)
# On a small generated dark-video set, through the launcher a researcher uses (tools/run_net.py):
#   1. the distributed self-test on the GPU(s) (NCCL when there are two or more);
#   2. tiny SlowFast: 2 epochs with fp16 autocast and the grad scaler (TRAIN.MIXED_PRECISION fp16, the
#      original's), BN re-estimation, then the 3x3 gamma test on the GPU writing its PKL;
#   3. the same run resumed to 3 epochs from its checkpoint (TRAIN.AUTO_RESUME);
#   4. tiny UniFormer: 2 epochs in bf16 with channels-last weights and torch.compile (MODEL.CHANNELS_LAST,
#      MODEL.COMPILE), then its test.
# Each step must end with exit code 0 and leave its PKL; the script prints "gpu smoke: ok" at the end.
# DEVICE_GPUS 0 runs the same steps on the CPU (how tests/tools/test_gpu_smoke.py checks the script itself).
set -euo pipefail
work="$(realpath -m "${1:-$(mktemp -d -t nc_gpu_smoke_XXXX)}")"
gpus="${2:-1}"
cd "$(dirname "$0")/.."
source scripts/python.sh
mkdir -p "$work"
common=(NUM_GPUS "$gpus" DATA.PATH_PREFIX "$work/data" DATA_LOADER.NUM_WORKERS 2
  DATA_LOADER.PIN_MEMORY "$([ "$gpus" -gt 0 ] && echo True || echo False)" TRAIN.BATCH_SIZE "$((4 * (gpus > 0 ? gpus : 1)))"
  TEST.BATCH_SIZE "$((18 * (gpus > 0 ? gpus : 1)))" TEST.NUM_ENSEMBLE_VIEWS 3 TEST.NUM_SPATIAL_CROPS 3
  TRAIN.EVAL_PERIOD 1 TRAIN.SAVE_LATEST True BN.NUM_BATCHES_PRECISE 2 TRAIN.MAX_ITERS_PER_EPOCH 3)
step() { echo "== gpu smoke: $1"; }

step "data"
"$PYTHON" tools/make_synthetic.py --out "$work/data" --seed 0 --num-classes 3 --videos-per-class 2 \
  --frames 24 --width 96 --height 72 --workers 4 --overwrite >"$work/make_synthetic.log"

step "distributed self-test"
"$PYTHON" tools/run_net.py --self-test --cfg configs/benchmark/sf_tiny.yaml "${common[@]}" OUTPUT_DIR "$work/selftest"

step "SlowFast, fp16 + grad scaler, 2 epochs, then the 3x3 test"
sf=(--cfg configs/benchmark/sf_tiny.yaml "${common[@]}" MODEL.NUM_CLASSES 3 OUTPUT_DIR "$work/sf"
  TRAIN.MIXED_PRECISION fp16 TEST.MIXED_PRECISION fp16)
"$PYTHON" tools/run_net.py "${sf[@]}" SOLVER.MAX_EPOCH 2
ls "$work"/sf/*.pkl >/dev/null

step "SlowFast resumed to 3 epochs"
"$PYTHON" tools/run_net.py "${sf[@]}" SOLVER.MAX_EPOCH 3 | tee "$work/resume.log"
grep -q "resum" "$work/resume.log" "$work"/sf/*.log 2>/dev/null || { echo "no resume was logged" >&2; exit 1; }

step "UniFormer, bf16 + channels-last + torch.compile, 2 epochs, then the 3x3 test"
"$PYTHON" tools/run_net.py --cfg configs/benchmark/uniformer_tiny.yaml "${common[@]}" MODEL.NUM_CLASSES 3 \
  OUTPUT_DIR "$work/uniformer" SOLVER.MAX_EPOCH 2 TRAIN.MIXED_PRECISION bf16 TEST.MIXED_PRECISION bf16 \
  MODEL.CHANNELS_LAST True MODEL.COMPILE True
ls "$work"/uniformer/*.pkl >/dev/null
echo "gpu smoke: ok ($work)"
