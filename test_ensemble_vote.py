"""Final ensemble and vote (configs/ensemble/*.yaml): thin entry point over nightcrawler.pseudo (--help)."""

import sys
from pathlib import Path

try:
    from nightcrawler.pseudo.cli import vote_main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from nightcrawler.pseudo.cli import vote_main

if __name__ == "__main__":
    sys.exit(vote_main())
