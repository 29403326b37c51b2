"""Stage-4 pseudo labels: thin entry point over nightcrawler.pseudo with configs/pseudo/stage4.yaml (--help)."""

import sys
from pathlib import Path

try:
    from nightcrawler.pseudo.cli import stage_main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nightcrawler.pseudo.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main(4))
