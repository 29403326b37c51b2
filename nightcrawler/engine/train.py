"""The training loop shared by the supervised ("adapt BN") and the pseudo-label trainers.

``train(cfg)`` runs in every process (the launcher sets up torch.distributed, logging and seeds). Pseudo-label
training is on when ``DATA.PSEUDO_CSV`` is set: each iteration then takes one labelled batch and one
pseudo-labelled dark batch (``zip`` of the two loaders) and makes one optimiser step on each, with its own
Mixup/CutMix draw. The loop below only trains; the side-effects after an epoch (reports, BN adaptation,
evaluation, checkpoints) are hooks (:mod:`nightcrawler.engine.hooks`), run in list order.

Pseudo-label switches (original behaviour by default): ``TRAIN.PSEUDO_APPLY_THRESHOLD`` applies the
``TRAIN.THRESHOLD`` confidence rule to the pseudo loss (the original computes it and drops it);
``TRAIN.PSEUDO_SOFT_TARGETS`` trains on the CSV probabilities (sharpened by ``MODEL.SOFT_T``) instead of the
hard CSV label; ``TRAIN.PSEUDO_LOSS_WEIGHT`` scales the pseudo step's loss.

``DISTILL.ENABLE`` (off by default) adds a frozen teacher's soft targets, computed on enhanced twins of the
clips, to the loss of the ``DISTILL.SPLITS`` batches (:mod:`nightcrawler.engine.distill`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.config.loading import ConfigError
from nightcrawler.engine.checkpointer import resolve_start
from nightcrawler.engine.distill import Distillation, SoftTargets, distill_enhancement
from nightcrawler.engine.hooks import EpochState, Hook, default_hooks, epoch_flags
from nightcrawler.engine.losses import (
    confidence_mask,
    masked_mean,
    soft_target_cross_entropy,
    soft_targets_from_probs,
)
from nightcrawler.engine.meters import TrainMeter, batch_topk_errors
from nightcrawler.engine.mixup import VideoMixup
from nightcrawler.engine.optim import LrSchedule, build_optimizer, set_lr
from nightcrawler.engine.reporting import TrainingReporter
from nightcrawler.models.build import unwrap_model
from nightcrawler.utils.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    amp_dtype,
    job_device,
    prepare_model,
)
from nightcrawler.utils.errors import TrainingDivergedError

logger = logging.getLogger("nightcrawler.train")


# ---------------------------------------------------------------------------------------------------- precision
@dataclass
class Precision:
    """Autocast dtype (None: FP32) and the gradient scaler (active only for FP16 on CUDA, as the original)."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def from_cfg(cls, cfg: CfgNode, device: torch.device) -> Precision:
        if device.type == "cuda":
            dtype = amp_dtype(cfg.TRAIN.MIXED_PRECISION, "TRAIN.MIXED_PRECISION")
        else:
            dtype = torch.bfloat16 if cfg.TRAIN.CPU_BF16 else None
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        return cls(device.type, dtype, scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


# ---------------------------------------------------------------------------------------------------- one step
@dataclass
class StepResult:
    loss: float
    logits: torch.Tensor  # detached
    kept: float  # fraction of clips in the loss (1.0 without a mask)


def optimisation_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    clip_norm: float | None,
    *,
    weight: float = 1.0,
    select: Callable[[torch.Tensor], torch.Tensor] | None = None,
    distill: SoftTargets | None = None,
    where: str = "",
) -> StepResult:
    """Forward (autocast), soft-target cross-entropy, scaled backward, unscale, clip the total gradient
    L2 norm, step, scaler update. ``select(logits)`` gives a mask of the clips that count in the loss
    (an empty mask still steps, with zero gradients, so distributed processes stay in step). ``distill``: a
    teacher's soft targets joined to the loss (dual-light distillation)."""
    with precision.autocast():
        logits = model(inputs)
    per_sample = soft_target_cross_entropy(logits, targets, reduction="none")
    mask = select(logits) if select is not None else None
    loss = masked_mean(per_sample, mask)
    if distill is not None:
        loss = distill.combine(logits, loss)
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"training diverged: the loss is {loss.item()} at {where}; stopped before this step, the "
            "checkpoints already written are kept (lower SOLVER.BASE_LR, check the inputs, or set "
            "TRAIN.MIXED_PRECISION none)"
        )
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss * weight).backward()
    if clip_norm is not None and clip_norm > 0:
        precision.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_norm)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    kept = float(mask.float().mean()) if mask is not None else 1.0
    return StepResult(float(loss.detach()), logits.detach(), kept)


# ---------------------------------------------------------------------------------------------------- a run
@dataclass
class TrainingRun:
    """Everything the loop needs, built once from the config by :func:`build_run`."""

    cfg: CfgNode
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    schedule: LrSchedule
    mixup: VideoMixup | None
    labelled: Any
    pseudo: Any | None
    iters_per_epoch: int  # iterations run per epoch
    lr_iters_per_epoch: int  # iterations per epoch as the LR schedule counts them
    clip_norm: float | None
    reporter: TrainingReporter
    distill: Distillation | None = None  # dual-light distillation (DISTILL.ENABLE)

    def batch_iterator(self) -> Iterator[tuple[dict, dict | None]]:
        if self.pseudo is None:
            pairs = ((b, None) for b in self.labelled)
        elif self.cfg.TRAIN.PSEUDO_EPOCH_LENGTH == "pseudo":
            pairs = zip(_endless(self.labelled), self.pseudo)
        else:
            pairs = zip(self.labelled, self.pseudo)
        return islice(pairs, self.iters_per_epoch)

    def set_epoch(self, epoch: int) -> None:
        for loader in (self.labelled, self.pseudo):
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)


def _clip_norm(cfg: CfgNode) -> float | None:
    if cfg.SOLVER.HONOR_CLIP_GRAD_L2NORM and cfg.SOLVER.CLIP_GRAD_L2NORM is not None:
        return float(cfg.SOLVER.CLIP_GRAD_L2NORM)
    return cfg.SOLVER.CLIP_GRADIENT


def _endless(loader) -> Iterator[dict]:
    """The loader's batches, starting a new pass whenever one ends."""
    while True:
        yield from loader


PSEUDO_EPOCH_LENGTHS = ("shorter", "pseudo")


def iterations_per_epoch(cfg: CfgNode, labelled_len: int, pseudo_len: int | None) -> tuple[int, int]:
    """(iterations run per epoch, iterations the LR schedule counts per epoch). The schedule counts the
    labelled loader (the original's rule), capped like the loop by ``TRAIN.MAX_ITERS_PER_EPOCH``; with
    ``TRAIN.PSEUDO_EPOCH_LENGTH pseudo`` an epoch is one pass over the pseudo loader (the labelled loader
    restarting as needed) and the schedule counts those iterations."""
    mode = cfg.TRAIN.PSEUDO_EPOCH_LENGTH
    if mode not in PSEUDO_EPOCH_LENGTHS:
        raise ValueError(f"TRAIN.PSEUDO_EPOCH_LENGTH must be one of {PSEUDO_EPOCH_LENGTHS}, got {mode!r}")
    if pseudo_len is not None and mode == "pseudo":
        cap = cfg.TRAIN.MAX_ITERS_PER_EPOCH if cfg.TRAIN.MAX_ITERS_PER_EPOCH > 0 else pseudo_len
        n = min(pseudo_len, cap)
        return n, n
    cap = cfg.TRAIN.MAX_ITERS_PER_EPOCH if cfg.TRAIN.MAX_ITERS_PER_EPOCH > 0 else labelled_len
    run = min(labelled_len, pseudo_len if pseudo_len is not None else labelled_len, cap)
    return run, min(labelled_len, cap)


def build_run(
    cfg: CfgNode, hooks: list[Hook] | None = None
) -> tuple[TrainingRun, list[Hook], int, dict | None]:
    """Model, optimiser, loaders, schedule and the epoch-end hooks (default: :func:`default_hooks`); returns them
    with the first epoch and the best metric so far."""
    from nightcrawler.data import build_loader
    from nightcrawler.models import build_model, get_card, load_weights_from_cfg
    from nightcrawler.models.speed import speed_up_from_cfg

    device = job_device(cfg.NUM_GPUS)
    model = build_model(cfg)
    load_weights_from_cfg(model, cfg)  # zoo weights; a checkpoint to resume from replaces them below
    unused = get_card(cfg.MODEL.MODEL_NAME).unused_parameters
    speed_up_from_cfg(model, cfg)  # MODEL.CHANNELS_LAST / MODEL.COMPILE (in place; keys unchanged)
    model = prepare_model(model, device, find_unused_parameters=unused)
    optimizer = build_optimizer(cfg, model)
    precision = Precision.from_cfg(cfg, device)
    start = resolve_start(cfg, model, optimizer, precision.scaler)
    labelled = build_loader(cfg, "train_label", teacher_enhancement=distill_enhancement(cfg, "train_label"))
    pseudo = (
        build_loader(
            cfg, "train_pseudo_label", teacher_enhancement=distill_enhancement(cfg, "train_pseudo_label")
        )
        if cfg.DATA.PSEUDO_CSV
        else None
    )
    if len(labelled) == 0 or (pseudo is not None and len(pseudo) == 0):
        raise ConfigError(
            "a training loader has no full batch: TRAIN.BATCH_SIZE per process exceeds the videos of "
            f"train_label ({len(labelled.dataset)})"
            + (f" or train_pseudo_label ({len(pseudo.dataset)})" if pseudo is not None else "")
        )
    n_run, n_lr = iterations_per_epoch(cfg, len(labelled), len(pseudo) if pseudo is not None else None)
    run = TrainingRun(
        cfg=cfg,
        device=device,
        model=model,
        optimizer=optimizer,
        precision=precision,
        schedule=LrSchedule.from_cfg(cfg),
        mixup=VideoMixup.from_cfg(cfg),
        labelled=labelled,
        pseudo=pseudo,
        iters_per_epoch=n_run,
        lr_iters_per_epoch=n_lr,
        clip_norm=_clip_norm(cfg),
        reporter=TrainingReporter(cfg),
        distill=Distillation.from_cfg(cfg, device, precision.autocast),
    )
    logger.info(
        "training %s from epoch %d (%s%s): %d iterations/epoch%s, precision %s",
        cfg.MODEL.MODEL_NAME,
        start.epoch + 1,
        start.kind,
        f" {start.source}" if start.source else "",
        n_run,
        f", pseudo labels {cfg.DATA.PSEUDO_CSV}" if pseudo is not None else "",
        precision.dtype or "fp32",
    )
    if cfg.LOG_MODEL_INFO:
        params = list(unwrap_model(model).parameters())
        logger.info(
            "model %s: %.2fM parameters (%.2fM trainable); GFLOPs per view: tools/flops.py",
            cfg.MODEL.MODEL_NAME,
            sum(p.numel() for p in params) / 1e6,
            sum(p.numel() for p in params if p.requires_grad) / 1e6,
        )
    return run, default_hooks(cfg, device) if hooks is None else hooks, start.epoch, start.best_metric


# ---------------------------------------------------------------------------------------------------- batches
def labelled_inputs(run: TrainingRun, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips and targets of a labelled batch: mixed + smoothed targets with Mixup, hard labels without."""
    x = batch["inputs"].to(run.device, non_blocking=True)
    y = batch["labels"].to(run.device, non_blocking=True)
    return run.mixup(x, y) if run.mixup is not None else (x, y)


def pseudo_inputs(run: TrainingRun, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips and targets of a pseudo-labelled batch: the CSV's hard label (original) or, with
    ``TRAIN.PSEUDO_SOFT_TARGETS``, its probabilities sharpened by ``MODEL.SOFT_T``."""
    cfg = run.cfg
    if not cfg.TRAIN.PSEUDO_SOFT_TARGETS:
        return labelled_inputs(run, batch)
    x = batch["inputs"].to(run.device, non_blocking=True)
    probs = soft_targets_from_probs(batch["probs"].to(run.device, non_blocking=True), cfg.MODEL.SOFT_T)
    return run.mixup.mix_soft(x, probs) if run.mixup is not None else (x, probs)


def pseudo_select(cfg: CfgNode) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The confidence mask of the pseudo loss when ``TRAIN.PSEUDO_APPLY_THRESHOLD`` (else None: all clips)."""
    if not cfg.TRAIN.PSEUDO_APPLY_THRESHOLD:
        return None
    return lambda logits: confidence_mask(logits, cfg.TRAIN.THRESHOLD)


# ---------------------------------------------------------------------------------------------------- the loop
def train_one_epoch(run: TrainingRun, epoch: int) -> TrainMeter:
    """One pass over the labelled loader (zipped with the pseudo loader when present)."""
    cfg = run.cfg
    run.model.train()
    meter = TrainMeter(run.iters_per_epoch, cfg.SOLVER.MAX_EPOCH, window=max(1, cfg.LOG_PERIOD))
    select = pseudo_select(cfg)
    failed = 0  # videos that failed to decode and were replaced by the dataset
    tick = time.perf_counter()
    for it, (batch, pseudo_batch) in enumerate(run.batch_iterator()):
        data_time = time.perf_counter() - tick
        failed += sum(int(b.get("failed", 0)) for b in (batch, pseudo_batch) if b is not None)
        lr = run.schedule.lr_at(epoch + it / run.lr_iters_per_epoch)
        set_lr(run.optimizer, lr)
        where = f"epoch {epoch + 1}, iteration {it + 1}"
        soft = run.distill.soft_targets(batch, "train_label", run.mixup) if run.distill is not None else None
        x, targets = labelled_inputs(run, batch)
        step = optimisation_step(
            run.model,
            run.optimizer,
            run.precision,
            x,
            targets,
            run.clip_norm,
            distill=soft,
            where=f"{where} (labelled batch)",
        )
        values = dict(
            zip(("loss", "top1_err", "top5_err"), [step.loss, *batch_topk_errors(step.logits, targets)])
        )
        if pseudo_batch is not None:
            psoft = (
                run.distill.soft_targets(pseudo_batch, "train_pseudo_label", run.mixup)
                if run.distill is not None
                else None
            )
            px, ptargets = pseudo_inputs(run, pseudo_batch)
            pstep = optimisation_step(
                run.model,
                run.optimizer,
                run.precision,
                px,
                ptargets,
                run.clip_norm,
                weight=cfg.TRAIN.PSEUDO_LOSS_WEIGHT,
                select=select,
                distill=psoft,
                where=f"{where} (pseudo-labelled batch)",
            )
            values.update(pseudo_loss=pstep.loss, pseudo_kept=pstep.kept)
        values = dict(zip(values, all_reduce_mean(list(values.values())).tolist()))
        meter.update(values, n=x.shape[0], lr=lr, dt_data=data_time, dt_step=time.perf_counter() - tick)
        run.reporter.iteration(meter, epoch, it, epoch * run.iters_per_epoch + it)
        tick = time.perf_counter()
    meter.counts["failed_videos"] = int(all_reduce_sum([failed])[0])
    if meter.counts["failed_videos"]:
        logger.warning(
            "epoch %d: %d videos failed to decode and were replaced", epoch + 1, meter.counts["failed_videos"]
        )
    return meter


def train(cfg: CfgNode, hooks: list[Hook] | None = None) -> nn.Module:
    """Trains ``cfg``'s model from its start point to ``SOLVER.MAX_EPOCH`` (every process calls this), running
    ``hooks`` (default :func:`~nightcrawler.engine.hooks.default_hooks`) after each epoch; returns the model
    (unwrapped from DDP)."""
    run, hooks, first_epoch, best_metric = build_run(cfg, hooks)
    try:
        for epoch in range(first_epoch, cfg.SOLVER.MAX_EPOCH):
            run.set_epoch(epoch)
            start = time.perf_counter()
            meter = train_one_epoch(run, epoch)
            evaluating, periodic = epoch_flags(cfg, epoch)
            state = EpochState(
                run, epoch, meter, time.perf_counter() - start, evaluating, periodic, best_metric
            )
            for hook in hooks:
                hook.after_epoch(state)
            best_metric = state.best_metric
    finally:
        run.reporter.close()
        for hook in hooks:
            hook.close()
    model = unwrap_model(run.model)
    params, buffers = model_fingerprint(model)
    logger.info("final model fingerprint: parameters %s buffers %s", params, buffers)
    return model


def model_fingerprint(model: nn.Module) -> tuple[str, str]:
    """Short SHA-256 digests of the parameters and of the buffers (equal digests: bitwise equal weights;
    logged by every process at the end so that distributed runs can be checked for consistency)."""
    digests = []
    for tensors in (model.named_parameters(), model.named_buffers()):
        h = hashlib.sha256()
        for name, t in tensors:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        digests.append(h.hexdigest()[:16])
    return digests[0], digests[1]
