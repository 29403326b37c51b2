#!/usr/bin/env bash
# Creates .venv in the checkout and installs Nightcrawler with its pinned dependencies (pip only).
# Idempotent: a second run checks a stamp and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.nightcrawler-setup
want=$(cat setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import nightcrawler, torch, av" 2>/dev/null; then
  exit 0
fi

# FFmpeg's shared libraries let the optional torchcodec backend run; install them where we can.
if ! ldconfig -p 2>/dev/null | grep -q libavcodec; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing ffmpeg (Debian) for the torchcodec backend"
    (apt-get install -y -q ffmpeg >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q ffmpeg >/dev/null 2>&1)) \
      || echo "[setup] ffmpeg not installed: the torchcodec backend will be unavailable (pyav/decord still work)"
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "[setup] installing Nightcrawler and its pinned dependencies into $VENV"
# torch/torchvision first so pip resolves the exact pinned builds.
"$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import nightcrawler, torch, torchvision, av, decord, fvcore, timm, yacs, pandas" \
  || { echo "[setup] installation incomplete: see the pip output above" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
