"""Dual-light distillation: a frozen teacher that sees enhanced clips guides a student trained on raw clips.

A model trained on gamma-brightened dark videos is a good teacher but needs the enhancement at test time; the
student learns to predict the same from the raw dark frames (its test runs with ``ENHANCE.TEST none``). Each
distilled training batch carries the student's clips (``inputs``, raw) and the teacher's twins
(``teacher_inputs``): the same decoded frames enhanced by ``DISTILL.TEACHER_ENHANCEMENT`` (any registered
enhancement spec, default ``gamma:value=0.25``) and passed through the same training transform with the same
random draws (crop, flip, RandAugment, erasing; :class:`~nightcrawler.data.ug2.UG2Dataset`). With Mixup/CutMix
the teacher's batch is mixed with the student's draw (same lambda, partners and box; the NumPy draw is replayed
and the student's random streams are left as they were), so both see the same mixed clip, as DeiT-style
distillation does. The student's loss on a distilled batch is::

    (1 - ALPHA) * label loss + ALPHA * T^2 * mean_n KL(softmax(teacher_n / T) || softmax(student_n / T))

where the label loss is the trainer's own (labels, pseudo labels or their soft targets, mixed, with the pseudo
confidence mask when that is on; the soft term counts every clip), ``T`` is ``DISTILL.TEMPERATURE``. ``ALPHA 0``
gives exactly the plain trainer's loss and its training trajectory.

The teacher (:func:`build_teacher`): the model of ``DISTILL.TEACHER_CFG`` (a config file; empty: the student's own
config), weights ``DISTILL.TEACHER_CHECKPOINT`` loaded strictly, on the student's device, in eval mode, without
gradients and with every parameter frozen; not wrapped in DDP (each process runs its own copy on its own
shard). Its eval outputs are taken as class log-probabilities (the log of the probabilities for models whose card
says they output probabilities in eval mode, e.g. MViT). It must take the student's clips (frames, crop size)
and have the same classes.

Keys: ``DISTILL.ENABLE`` (off by default: nothing changes), ``TEACHER_CFG``, ``TEACHER_CHECKPOINT``,
``TEACHER_ENHANCEMENT``, ``TEMPERATURE`` (4), ``ALPHA`` (0.5), ``SPLITS`` (which batches are distilled:
``train_pseudo_label`` by default — the dark, pseudo-labelled batches — and/or ``train_label``). The student's dark
training clips must be raw (``ENHANCE.TRAIN_DARK`` none; checked at load time).

Cost: per distilled batch one extra no-gradient forward of the teacher (about a third of a training step for a
teacher as large as the student), the teacher's weights in memory on every process, and a second transform of
every distilled clip in the data loader workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.data.enhance import Enhancement, canonical, phase_enhancement
from nightcrawler.engine.losses import distillation_loss, log_probabilities
from nightcrawler.engine.mixup import VideoMixup
from nightcrawler.utils.seeding import capture_random_states

logger = logging.getLogger(__name__)


def distill_enhancement(cfg: CfgNode, split: str) -> Enhancement | None:
    """The teacher's enhancement for ``split``'s batches: ``DISTILL.TEACHER_ENHANCEMENT`` when ``DISTILL.ENABLE``
    and ``split`` is one of ``DISTILL.SPLITS``, else None (no teacher copy is made)."""
    if not cfg.DISTILL.ENABLE or split not in cfg.DISTILL.SPLITS:
        return None
    return canonical(cfg.DISTILL.TEACHER_ENHANCEMENT)


# ---------------------------------------------------------------------------------------------------- teacher
class Teacher:
    """A frozen model in eval mode returning class log-probabilities of clips (no gradients)."""

    def __init__(self, model: nn.Module, outputs: str = "logits") -> None:
        model.requires_grad_(False)
        self.model = model.eval()
        self.outputs = outputs

    @torch.no_grad()
    def log_probs(self, clips: torch.Tensor) -> torch.Tensor:
        self.model.eval()  # stays in eval mode whatever the trainer does to its own model
        return log_probabilities(self.model(clips), self.outputs)


def teacher_cfg(cfg: CfgNode) -> CfgNode:
    """The teacher's config: ``DISTILL.TEACHER_CFG`` loaded and checked (empty: a copy of the student's ``cfg``),
    on the student's device (``NUM_GPUS``). Raises ConfigError when its class count differs from the student's."""
    from nightcrawler.config import ConfigError, assert_and_infer_cfg, load_config

    if not cfg.DISTILL.TEACHER_CFG:
        return cfg.clone()
    teacher = load_config(cfg.DISTILL.TEACHER_CFG, ["NUM_GPUS", cfg.NUM_GPUS, "DISTILL.ENABLE", False])
    teacher = assert_and_infer_cfg(teacher)
    if teacher.MODEL.NUM_CLASSES != cfg.MODEL.NUM_CLASSES:
        raise ConfigError(
            f"DISTILL.TEACHER_CFG = {cfg.DISTILL.TEACHER_CFG!r} has MODEL.NUM_CLASSES {teacher.MODEL.NUM_CLASSES}, "
            f"the student {cfg.MODEL.NUM_CLASSES}: the soft targets need the same classes"
        )
    return teacher


def build_teacher(cfg: CfgNode, device: torch.device | str) -> Teacher:
    """The teacher of the student config ``cfg`` (see the module docstring): built from :func:`teacher_cfg`,
    ``DISTILL.TEACHER_CHECKPOINT`` loaded strictly, frozen, in eval mode on ``device``."""
    from nightcrawler.models import build_model, get_card
    from nightcrawler.models.checkpoint import load_checkpoint_weights, require_trained_classifier

    tcfg = teacher_cfg(cfg)
    with torch.random.fork_rng(devices=[]):  # its throw-away initialisation leaves the student's draws alone
        model = build_model(tcfg)
    path = cfg.DISTILL.TEACHER_CHECKPOINT
    require_trained_classifier(model, load_checkpoint_weights(model, path, tcfg, strict=True))
    outputs = get_card(tcfg.MODEL.MODEL_NAME).outputs
    logger.info(
        "distillation teacher %s from %s (%s config, outputs %s), clips enhanced %s",
        tcfg.MODEL.MODEL_NAME,
        path,
        cfg.DISTILL.TEACHER_CFG or "the student's",
        outputs,
        canonical(cfg.DISTILL.TEACHER_ENHANCEMENT).spec,
    )
    return Teacher(model.to(device), outputs)


# ---------------------------------------------------------------------------------------------------- loss
@dataclass
class SoftTargets:
    """The teacher's log-probabilities of one batch and how its soft loss joins the student's label loss."""

    teacher_log_probs: torch.Tensor
    temperature: float
    alpha: float

    def soft_loss(self, student_logits: torch.Tensor) -> torch.Tensor:
        return distillation_loss(student_logits, self.teacher_log_probs, self.temperature)

    def combine(self, student_logits: torch.Tensor, label_loss: torch.Tensor) -> torch.Tensor:
        """``(1 - alpha) * label_loss + alpha * soft loss`` (``alpha`` 0: exactly ``label_loss``, zero gradients
        from the soft term)."""
        return (1.0 - self.alpha) * label_loss + self.alpha * self.soft_loss(student_logits)


class Distillation:
    """Makes the :class:`SoftTargets` of the distilled batches (``splits``) from their ``teacher_inputs``."""

    def __init__(
        self,
        teacher: Teacher,
        temperature: float,
        alpha: float,
        splits: Sequence[str],
        device: torch.device | str = "cpu",
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(f"need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}")
        self.teacher = teacher
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.splits = tuple(splits)
        self.device = torch.device(device)
        self.autocast = autocast

    @classmethod
    def from_cfg(
        cls,
        cfg: CfgNode,
        device: torch.device | str,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> Distillation | None:
        """The distillation ``DISTILL.*`` describes (teacher built and loaded), or None when it is off."""
        if not cfg.DISTILL.ENABLE:
            return None
        for phase, key in (("eval", "ENHANCE.EVAL"), ("test", "ENHANCE.TEST")):
            enhancement = phase_enhancement(cfg, phase)
            if not enhancement.is_identity:
                logger.warning(
                    "dual-light distillation: the student's %s clips are enhanced (%s = %s); the student is meant "
                    "for raw frames (set %s none)",
                    phase,
                    key,
                    enhancement.spec,
                    key,
                )
        return cls(
            build_teacher(cfg, device),
            cfg.DISTILL.TEMPERATURE,
            cfg.DISTILL.ALPHA,
            list(cfg.DISTILL.SPLITS),
            device,
            autocast,
        )

    def soft_targets(self, batch: dict, split: str, mixup: VideoMixup | None = None) -> SoftTargets | None:
        """The teacher's targets for a batch of ``split`` (None when that split is not distilled). Call it before
        the student's batch is mixed: the teacher's clips get the draw the student's mixing makes next."""
        if split not in self.splits:
            return None
        if "teacher_inputs" not in batch:
            raise KeyError(
                f"a {split} batch has no teacher_inputs: its loader must be built with teacher_enhancement "
                "(nightcrawler.engine.distill.distill_enhancement)"
            )
        x = batch["teacher_inputs"].to(self.device, non_blocking=True)
        if mixup is not None:
            states = capture_random_states()
            x, _ = mixup.mix_clips(x)
            states.restore()  # the student's mixing makes the very same draw
        with self.autocast():
            log_probs = self.teacher.log_probs(x)
        return SoftTargets(log_probs.float(), self.temperature, self.alpha)
