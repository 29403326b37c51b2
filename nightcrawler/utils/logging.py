"""Per-process logging: console on rank 0, every rank's lines to ``OUTPUT_DIR/stdout.log``."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

_FORMAT = "[%(asctime)s][%(levelname)s] %(name)s: %(message)s"


def setup_logging(output_dir: str | None, rank: int = 0, level: int = logging.INFO) -> None:
    """Configures the root logger for this process (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_nightcrawler", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter(_FORMAT if rank == 0 else f"[rank {rank}]" + _FORMAT, datefmt="%m/%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        console._nightcrawler = True  # type: ignore[attr-defined]
        root.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "stdout.log"), mode="a")
        fh.setFormatter(fmt)
        fh._nightcrawler = True  # type: ignore[attr-defined]
        root.addHandler(fh)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def log_json_stats(logger: logging.Logger, stats: dict[str, Any], output_dir: str | None = None) -> None:
    """Logs ``json_stats: {...}`` (as the original) and appends the dict to ``OUTPUT_DIR/stats.jsonl`` on rank 0."""
    from nightcrawler.utils.distributed import is_master

    def _plain(v: Any) -> Any:
        if hasattr(v, "item"):
            v = v.item()
        return float(f"{v:.6g}") if isinstance(v, float) else v  # 6 significant digits (learning rates ~1e-6)

    clean = {k: _plain(v) for k, v in stats.items()}
    line = json.dumps(clean, sort_keys=True)
    logger.info("json_stats: %s", line)
    if output_dir and is_master():
        with open(os.path.join(output_dir, "stats.jsonl"), "a", encoding="utf-8") as f:
            f.write(line + "\n")


def environment_summary() -> dict[str, str]:
    """Versions of the libraries that shape results (logged at start)."""
    import platform

    info = {"python": platform.python_version()}
    for mod in ("torch", "torchvision", "numpy", "timm", "fvcore", "av", "decord", "yacs"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as exc:  # an optional backend may be missing or broken
            info[mod] = f"unavailable ({type(exc).__name__})"
    import torch

    info["cuda"] = torch.version.cuda or "none"
    info["gpus"] = str(torch.cuda.device_count())
    return info
