"""Per-class threshold search for the pseudo-label stages: thin entry point over nightcrawler.pseudo (--help)."""

import sys
from pathlib import Path

try:
    from nightcrawler.pseudo.cli import search_main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nightcrawler.pseudo.cli import search_main

if __name__ == "__main__":
    sys.exit(search_main())
