"""Test-time entropy minimisation (TENT) of the BatchNorm affine parameters on unlabelled dark clips.

After the BatchNorm statistics have been re-estimated on dark videos (:mod:`nightcrawler.engine.bn_adapt`), TENT
(Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR 2021) tunes only the BatchNorm
weights and biases so that the model's predictions on unlabelled clips become confident: each step forwards
one batch, takes the mean Shannon entropy of the predicted class distribution and makes one optimiser step
(SGD with momentum 0.9 as TENT, or Adam) on the BatchNorm affine parameters. Every other parameter and buffer
keeps its value bit for bit.

Normalisation while adapting (``bn_mode``):

* ``fixed`` (default): the whole model stays in eval mode and BatchNorm normalises with the adapted running
  statistics, which do not change. Our adaptation batches are a handful of videos (a few clips per process);
  TENT's batch statistics from so few clips are noisy and differ from the statistics the test uses, whereas
  the precise-BN population statistics are exactly what the tester normalises with, so the affine parameters
  are tuned for the normalisation they will meet.
* ``batch``: TENT's own choice: BatchNorm layers (only they; dropout and stochastic depth stay off) normalise
  with each batch's statistics. The running statistics are still left untouched (the layers stop tracking
  them while adapting), so the test afterwards normalises with the adapted running statistics.

Models whose card says they output probabilities in eval mode (MViT) are handled by taking the log of those
probabilities (:func:`~nightcrawler.engine.losses.log_probabilities`); models without trainable BatchNorm
(MViT, SlowFast with frozen BN) are left alone. With several processes every process adapts on its own shard
of clips and the affine gradients are averaged over processes before each step, so all processes hold the
same parameters throughout.

Where it runs (``TENT.ENABLE``, off by default): the tester, after the test model is built and before any
scoring, and ``tools/adapt_bn.py`` after the BN statistics, so that the written checkpoint carries the tuned
affine parameters. Clips: ``TENT.BATCH_SIZE`` videos per step over all processes from ``TENT.SPLIT`` (default
the BN adaptation split ``train_unlabel``), with the BN phase's enhancement (``ENHANCE.BN``). A training split
gives training-style clips (a fresh random clip, crop and flip of a random video every step, as the BN
statistics pass sees them: more variety over the steps than a fixed view); a test split gives its centre
crop of one uniform view per video, in random order. ``TENT.STEPS`` steps (the loader restarts when it runs
out), learning rate ``TENT.LR``, optimiser ``TENT.OPTIMIZER``, mode ``TENT.BN_MODE``.

Cost: one forward and one backward (gradients reach only the BatchNorm parameters, no weight gradients) per
step, i.e. ``TENT.STEPS`` training-sized steps of ``TENT.BATCH_SIZE`` videos, plus two no-gradient passes over
the probe batches for the entropy report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from yacs.config import CfgNode

from nightcrawler.engine.bn_adapt import bn_layers
from nightcrawler.engine.losses import log_probabilities, prediction_entropy
from nightcrawler.models.build import unwrap_model
from nightcrawler.utils.distributed import all_reduce_mean, get_world_size, is_dist
from nightcrawler.utils.errors import TrainingDivergedError

logger = logging.getLogger(__name__)

BN_MODES = ("fixed", "batch")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class TentReport:
    """What an entropy minimisation did. Entropies are mean nats per clip over the probe batches (the first
    batches of the adaptation, averaged over processes), measured in the adaptation's normalisation mode."""

    steps: int
    bn_layers: int
    parameters: int  # adapted scalars (BatchNorm weights and biases)
    bn_mode: str
    optimizer: str
    lr: float
    entropy_before: float | None = None
    entropy_after: float | None = None
    step_entropies: list[float] = field(default_factory=list)  # the loss of every step, before its update

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def affine_bn_layers(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers of ``model`` with trainable affine parameters (frozen-BN variants keep theirs as buffers
    and are not BatchNorm modules, so they are not listed)."""
    return [
        m for m in bn_layers(model) if isinstance(m.weight, nn.Parameter) and isinstance(m.bias, nn.Parameter)
    ]


def _clips(batch: Any, device: torch.device) -> torch.Tensor:
    """The clips of a loader batch as one ``(N, 3, T, H, W)`` tensor: training batches as they are, test batches
    ``(B, K, 3, T, H, W)`` flattened, videos that failed to decode (``ok`` False) left out."""
    x = batch["inputs"] if isinstance(batch, dict) else batch
    if isinstance(batch, dict) and "ok" in batch:
        x = x[batch["ok"]]
    if x.dim() == 6:
        x = x.flatten(0, 1)
    return x.to(device, non_blocking=True).float()


def _endless(loader: Iterable[Any], device: torch.device) -> Iterator[torch.Tensor]:
    """Clip batches of ``loader``, restarting it (with a new sampler epoch) whenever it ends."""
    epoch = 0
    while True:
        produced = False
        for batch in loader:
            x = _clips(batch, device)
            if x.shape[0]:
                produced = True
                yield x
        if not produced:
            raise ValueError("TENT: the adaptation loader yields no clip (it needs at least one full batch)")
        epoch += 1
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _mean_entropy(model: nn.Module, x: torch.Tensor, outputs: str) -> torch.Tensor:
    return prediction_entropy(log_probabilities(model(x), outputs)).mean()


def _average_gradients(params: list[nn.Parameter]) -> None:
    """Averages the gradients of ``params`` over processes (no-op in one process); a parameter the forward did not
    reach counts with a zero gradient."""
    if not (is_dist() and get_world_size() > 1):
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def _probe_entropy(model: nn.Module, probe: list[torch.Tensor], outputs: str) -> float:
    with torch.no_grad():
        values = [float(_mean_entropy(model, x, outputs)) * x.shape[0] for x in probe]
    mean = sum(values) / max(1, sum(x.shape[0] for x in probe))
    return float(all_reduce_mean([mean])[0])


def build_tent_optimizer(params: list[nn.Parameter], kind: str, lr: float) -> torch.optim.Optimizer:
    """TENT's optimisers, without weight decay: SGD with momentum 0.9, or Adam (betas 0.9, 0.999)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    raise ValueError(f"TENT optimizer must be one of {OPTIMIZERS}, got {kind!r}")


def entropy_minimisation(
    model: nn.Module,
    loader: Iterable[Any],
    steps: int,
    lr: float,
    *,
    optimizer: str = "sgd",
    bn_mode: str = "fixed",
    outputs: str = "logits",
    device: torch.device | str = "cpu",
    probe_batches: int = 2,
) -> TentReport:
    """Minimises the mean prediction entropy of ``model`` on ``loader``'s clips over its BatchNorm affine
    parameters only (see the module docstring), in place; returns a :class:`TentReport`.

    Args:
        model: the model (a DDP wrapper is unwrapped; the bare module is adapted).
        loader: batches as the project's loaders make them (dicts with ``inputs``), or bare clip tensors.
        steps: optimiser steps, one batch each (the loader restarts as needed).
        lr: learning rate.
        optimizer: ``sgd`` (momentum 0.9) or ``adam``.
        bn_mode: ``fixed`` (adapted running statistics) or ``batch`` (batch statistics), see the module docstring.
        outputs: what the model returns in eval mode: ``logits`` or ``probabilities`` (its card's ``outputs``).
        device: where the clips go (the model must already be there).
        probe_batches: the first batches, kept to measure the entropy before and after (they are also the
            first steps' batches).

    The model's train/eval modes, ``requires_grad`` flags and BatchNorm ``track_running_stats`` are restored
    afterwards.
    """
    if steps < 1:
        raise ValueError(f"TENT steps must be >= 1, got {steps}")
    if bn_mode not in BN_MODES:
        raise ValueError(f"TENT bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"TENT optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    bare = unwrap_model(model)
    layers = affine_bn_layers(bare)
    report = TentReport(0, len(layers), 0, bn_mode, optimizer, float(lr))
    if not layers:
        logger.info("TENT: %s has no trainable BatchNorm layer, nothing to adapt", type(bare).__name__)
        return report
    params = [p for m in layers for p in (m.weight, m.bias)]
    report.parameters = sum(p.numel() for p in params)
    device = torch.device(device)

    was_training = bare.training
    flags = [(p, p.requires_grad) for p in bare.parameters()]
    tracking = [(m, m.track_running_stats) for m in layers]
    try:
        bare.eval()
        bare.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        if bn_mode == "batch":
            for m in layers:
                m.train()
                m.track_running_stats = False  # batch statistics, running statistics left as they are
        opt = build_tent_optimizer(params, optimizer, lr)
        batches = _endless(loader, device)
        probe = [next(batches) for _ in range(max(1, min(probe_batches, steps)))]
        report.entropy_before = _probe_entropy(bare, probe, outputs)
        for step in range(steps):
            x = probe[step] if step < len(probe) else next(batches)
            loss = _mean_entropy(bare, x, outputs)
            mean = float(all_reduce_mean([float(loss.detach())])[0])  # every process sees a divergence
            if not math.isfinite(mean):
                raise TrainingDivergedError(
                    f"TENT: the entropy is {mean} at step {step + 1}; stopped before this step's update "
                    "(lower TENT.LR)"
                )
            opt.zero_grad(set_to_none=False)
            loss.backward()
            _average_gradients(params)
            opt.step()
            report.step_entropies.append(mean)
        report.steps = steps
        report.entropy_after = _probe_entropy(bare, probe, outputs)
    finally:
        for m, track in tracking:
            m.track_running_stats = track
        for p, flag in flags:
            p.requires_grad_(flag)
        for p in params:
            p.grad = None
        bare.train(was_training)
    logger.info(
        "TENT: %d BatchNorm layers (%d parameters), %d steps (%s, lr %g, %s statistics): mean entropy %.4f -> %.4f",
        len(layers),
        report.parameters,
        steps,
        optimizer,
        lr,
        bn_mode,
        report.entropy_before,
        report.entropy_after,
    )
    return report


# ---------------------------------------------------------------------------------------------------- from cfg
def tent_loader(cfg: CfgNode, batch_size: int, open_fn=None):
    """The shuffled ``TENT.SPLIT`` loader of ``batch_size`` videos per batch, with the BN phase's enhancement
    (training-style clips for a training split, one centre view per video for a test split)."""
    from nightcrawler.data import build_loader, phase_enhancement, split_info

    kwargs: dict[str, Any] = {} if split_info(cfg.TENT.SPLIT).training else {"views": 1, "crops": 1}
    if open_fn is not None:
        kwargs["open_fn"] = open_fn
    return build_loader(
        cfg,
        cfg.TENT.SPLIT,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        enhancement=phase_enhancement(cfg, "bn"),
        **kwargs,
    )


def adapt_with_tent(
    cfg: CfgNode,
    model: nn.Module,
    device: torch.device | str,
    *,
    batch_size: int | None = None,
    open_fn=None,
) -> TentReport:
    """Runs :func:`entropy_minimisation` with the ``TENT.*`` keys on ``model`` (the tester and
    ``adapt_checkpoint`` call this when ``TENT.ENABLE``). ``batch_size``: videos per batch on this process
    (default ``TENT.BATCH_SIZE`` / processes). ``open_fn``: reader factory (tests)."""
    from nightcrawler.models import get_card

    per_process = batch_size or max(1, cfg.TENT.BATCH_SIZE // get_world_size())
    loader = tent_loader(cfg, per_process, open_fn)
    logger.info(
        "TENT on %s (%d videos, %d per batch and process, enhancement %s)",
        cfg.TENT.SPLIT,
        len(loader.dataset),
        per_process,
        loader.dataset.enhancement.spec,
    )
    return entropy_minimisation(
        model,
        loader,
        cfg.TENT.STEPS,
        cfg.TENT.LR,
        optimizer=cfg.TENT.OPTIMIZER,
        bn_mode=cfg.TENT.BN_MODE,
        outputs=get_card(cfg.MODEL.MODEL_NAME).outputs,
        device=device,
    )
