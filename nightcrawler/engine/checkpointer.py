"""Training checkpoints: atomic save, resume, and the start point of a run.

A checkpoint is a ``torch.save`` dict in the original's layout (``epoch`` = 0-based index of the epoch just
finished, ``model_state`` without DDP prefixes, ``optimizer_state``, ``scaler``, ``cfg`` as YAML text) plus
what an exact resume needs and the original lost: ``best_metric`` (the best evaluation so far, so a resumed
run does not overwrite ``best.pyth`` with a worse model) and ``rng_states`` (torch, CUDA, NumPy and Python
``random`` states of every process). Everything is plain tensors and containers, loadable with
``torch.load(..., weights_only=True)``. Files are written by global rank 0 only, through a temporary file and
a rename, so a kill never leaves a truncated checkpoint.

Files: ``OUTPUT_DIR/checkpoints/checkpoint_latest.pyth`` (``TRAIN.SAVE_LATEST``, every epoch) or
``checkpoint_epoch_{NNNNN}.pyth`` (1-based epoch, every ``TRAIN.CHECKPOINT_PERIOD`` epochs and the last),
and ``OUTPUT_DIR/best.pyth``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.models.build import unwrap_model
from nightcrawler.models.checkpoint import CheckpointError, load_checkpoint_weights, read_checkpoint
from nightcrawler.utils.distributed import all_gather_object, get_rank, get_world_size, is_master
from nightcrawler.utils.io import atomic_torch_save

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
LATEST_NAME = "checkpoint_latest.pyth"
BEST_NAME = "best.pyth"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_SUBDIR


def epoch_checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    """``checkpoints/checkpoint_epoch_{epoch + 1:05d}.pyth`` for the 0-based ``epoch`` just finished."""
    return checkpoint_dir(output_dir) / f"checkpoint_epoch_{epoch + 1:05d}.pyth"


def latest_checkpoint_path(output_dir: str | Path) -> Path:
    return checkpoint_dir(output_dir) / LATEST_NAME


def best_checkpoint_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / BEST_NAME


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """``checkpoint_latest.pyth`` when present, else the lexicographically last ``checkpoint_epoch_*.pyth``
    (the original's rule), else None."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return None
    latest = folder / LATEST_NAME
    if latest.is_file():
        return latest
    epochs = sorted(p for p in folder.glob("checkpoint_epoch_*.pyth") if p.is_file())
    return epochs[-1] if epochs else None


def resume_candidates(output_dir: str | Path) -> list[Path]:
    """Checkpoints to resume from, in the order tried: ``checkpoint_latest.pyth`` when present (the original's
    rule), then the ``checkpoint_epoch_*.pyth`` files from the newest to the oldest."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    latest = folder / LATEST_NAME
    epochs = sorted((p for p in folder.glob("checkpoint_epoch_*.pyth") if p.is_file()), reverse=True)
    return ([latest] if latest.is_file() else []) + epochs


def _auto_resume(
    output_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
) -> StartPoint | None:
    """Loads the first of :func:`resume_candidates` that loads; a truncated or corrupt one is named in a
    warning and the next (older) one is tried. None without candidates; CheckpointError when none loads."""
    candidates = resume_candidates(output_dir)
    failures = []
    for path in candidates:
        try:
            start = load_training_state(path, model, optimizer, scaler, restore_rng=True)
        except CheckpointError as exc:
            logger.warning("auto-resume: cannot load %s (%s); trying the previous checkpoint", path, exc)
            failures.append(f"{path}: {exc}")
            continue
        start.kind = "resume"
        if failures:
            start.extra["skipped"] = failures
        logger.info("auto-resume from %s: starting at epoch %d", path, start.epoch + 1)
        return start
    if failures:
        raise CheckpointError(
            "auto-resume: no checkpoint in "
            f"{checkpoint_dir(output_dir)} loads (remove them or set TRAIN.AUTO_RESUME False); tried:\n  "
            + "\n  ".join(failures)
        )
    return None


def remove_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Deletes the temporary files a kill during a checkpoint write left behind (``.NAME.pyth.*.tmp`` beside
    ``best.pyth`` and in ``checkpoints/``); the finished checkpoints are never touched. Returns what it removed."""
    removed = []
    for folder in (Path(output_dir), checkpoint_dir(output_dir)):
        for tmp in folder.glob(".*.pyth.*.tmp"):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
    if removed:
        logger.info("removed %d unfinished checkpoint write(s) of a killed run: %s", len(removed), removed)
    return removed


def is_checkpoint_epoch(epoch: int, period: int, max_epoch: int) -> bool:
    """True when the 0-based ``epoch`` ends a ``period`` or is the last epoch."""
    return epoch + 1 == max_epoch or (period > 0 and (epoch + 1) % period == 0)


# ---------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python ``random`` states as plain tensors and containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores a state made by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    key = state["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every process's :func:`rng_state`, in rank order (a collective call: run it on every process)."""
    return all_gather_object(rng_state())


# ---------------------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    cfg: CfgNode,
    *,
    best_metric: dict | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path | None:
    """Writes a checkpoint atomically on global rank 0 (other ranks return None without writing)."""
    if not is_master():
        return None
    state = {
        "epoch": int(epoch),
        "model_state": unwrap_model(model).state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else {},
        "cfg": cfg.dump(),
        "best_metric": best_metric,
        "rng_states": rng_states,
    }
    out = atomic_torch_save(state, path)
    logger.info("checkpoint written: %s (epoch %d)", out, epoch + 1)
    return out


@dataclass
class StartPoint:
    """Where training starts: first epoch to run and what was restored."""

    epoch: int = 0
    source: str = ""
    kind: str = "scratch"  # scratch | resume | weights | continue
    best_metric: dict | None = None
    rng_restored: bool = False
    extra: dict = field(default_factory=dict)


def load_training_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    restore_rng: bool = False,
) -> StartPoint:
    """Loads one of our checkpoints into ``model`` (strictly), and optimiser / scaler / RNG when asked.

    Returns the start point ``saved epoch + 1``.
    """
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "model_state" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (needs 'model_state' and 'epoch' keys)")
    try:
        unwrap_model(model).load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: model weights do not match the configured model: {exc}") from exc
    if optimizer is not None:
        if not ckpt.get("optimizer_state"):
            raise CheckpointError(f"{path}: has no optimizer_state to resume from")
        optimizer.load_state_dict(ckpt["optimizer_state"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    start = StartPoint(epoch=int(ckpt["epoch"]) + 1, source=str(path), best_metric=ckpt.get("best_metric"))
    states = ckpt.get("rng_states")
    if restore_rng and states:
        if len(states) == get_world_size():
            set_rng_state(states[get_rank()])
            start.rng_restored = True
        else:
            logger.warning(
                "%s: saved by %d processes, now %d: random states not restored (augmentation differs from an "
                "uninterrupted run)",
                path,
                len(states),
                get_world_size(),
            )
    return start


def resolve_start(
    cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> StartPoint:
    """Applies the original's start-point priority and returns where training starts.

    1. ``TRAIN.AUTO_RESUME`` and a checkpoint in ``OUTPUT_DIR/checkpoints``: everything restored (weights,
       optimiser, scaler, best metric, random states), start after its epoch;
    2. ``TRAIN.CHECKPOINT_FILE_PATH``: its weights (any layout the model loader knows); when it is one of our
       checkpoints and ``TRAIN.CHECKPOINT_EPOCH_RESET`` is False, also optimiser and scaler, continuing after
       its epoch; otherwise epoch 0 with a fresh optimiser;
    3. epoch 0.

    The original's second rule (resume from ``best.pyth`` with its optimiser when ``TEST.TEST_BEST``) is left
    out on purpose: it restarts training from an older epoch's optimiser state (spec defect 10).
    """
    if is_master():
        remove_stale_temporaries(cfg.OUTPUT_DIR)
    if cfg.TRAIN.AUTO_RESUME:
        start = _auto_resume(cfg.OUTPUT_DIR, model, optimizer, scaler)
        if start is not None:
            return start
    path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    if path:
        report = load_checkpoint_weights(model, path, cfg, strict=cfg.MODEL.PRETRAIN_STRICT)
        logger.info("TRAIN.CHECKPOINT_FILE_PATH: %s", report.summary())
        if not cfg.TRAIN.CHECKPOINT_EPOCH_RESET:
            ckpt = read_checkpoint(path)
            if isinstance(ckpt, dict) and "epoch" in ckpt and ckpt.get("optimizer_state"):
                optimizer.load_state_dict(ckpt["optimizer_state"])
                if scaler is not None and ckpt.get("scaler"):
                    scaler.load_state_dict(ckpt["scaler"])
                epoch = int(ckpt["epoch"]) + 1
                logger.info("continuing %s with its optimiser at epoch %d", path, epoch + 1)
                return StartPoint(
                    epoch=epoch, source=str(path), kind="continue", best_metric=ckpt.get("best_metric")
                )
        return StartPoint(epoch=0, source=str(path), kind="weights")
    return StartPoint()
