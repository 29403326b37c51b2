#!/usr/bin/env python
"""Classify videos with trained models (the ``nightcrawler-predict`` command; ``--help`` for the options).

python tools/predict.py --cfg CONFIG --checkpoint FILE PATH [PATH ...] [--json OUT | --csv OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nightcrawler.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
