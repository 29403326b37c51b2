"""Optimiser construction (parameter groups with their weight decay) and the per-iteration learning rate.

Parameter groups follow the original: parameters of BatchNorm-family modules get ``BN.WEIGHT_DECAY``; with
``SOLVER.ZERO_WD_1D_PARAM`` every other 1-D parameter (biases, LayerNorm weights) and every name the model
lists in ``no_weight_decay()`` (MViT's position embeddings and class token when ``MVIT.ZERO_DECAY_POS_CLS``) gets
no decay; the rest gets ``SOLVER.WEIGHT_DECAY``. All groups share one learning rate, set every iteration from
:class:`LrSchedule`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.config.checks import scaled_learning_rates
from nightcrawler.models.build import unwrap_model

# BatchNorm and InstanceNorm modules (torch's common base), as the original's test for BN parameters.
_BN_TYPES = (nn.modules.batchnorm._NormBase,)


def param_groups(
    model: nn.Module,
    weight_decay: float,
    bn_weight_decay: float = 0.0,
    zero_wd_1d: bool = True,
    skip_names: Iterable[str] = (),
) -> list[dict]:
    """Splits the trainable parameters into up to three groups, each with ``name``, ``params`` and
    ``weight_decay``: "bn" (BatchNorm-family modules), "no_decay" (1-D parameters and ``skip_names`` when
    ``zero_wd_1d``; otherwise ``skip_names`` only) and "decay". Empty groups are left out."""
    model = unwrap_model(model)
    skip = set(skip_names)
    bn, no_decay, decay = [], [], []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        is_bn = isinstance(module, _BN_TYPES)
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{pname}" if module_name else pname
            if is_bn:
                bn.append(p)
            elif full in skip or (zero_wd_1d and p.ndim <= 1):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [
        {"name": "bn", "params": bn, "weight_decay": bn_weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.999, eps 1e-8) or SGD over :func:`param_groups`, starting at the epoch-0 rate."""
    bare = unwrap_model(model)
    skip = bare.no_weight_decay() if hasattr(bare, "no_weight_decay") else ()
    groups = param_groups(
        bare, cfg.SOLVER.WEIGHT_DECAY, cfg.BN.WEIGHT_DECAY, cfg.SOLVER.ZERO_WD_1D_PARAM, skip_names=skip
    )
    lr = LrSchedule.from_cfg(cfg).lr_at(0.0)
    method = cfg.SOLVER.OPTIMIZING_METHOD
    if method == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if method == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=cfg.SOLVER.MOMENTUM,
            dampening=cfg.SOLVER.DAMPENING,
            nesterov=cfg.SOLVER.NESTEROV,
        )
    raise ValueError(f"SOLVER.OPTIMIZING_METHOD = {method!r} is not one of adamw, sgd")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Sets the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class LrSchedule:
    """Learning rate as a function of the fractional epoch ``e = epoch + iter / iters_per_epoch``.

    ``cosine``: ``end + (base - end) * (1 + cos(pi * e' / span)) / 2`` with ``e' = e - warmup`` and
    ``span = max_epoch - warmup`` when ``cosine_after_warmup``, else ``e' = e`` and ``span = max_epoch``.
    ``steps_with_relative_lrs``: ``base * lrs[i]`` where ``i`` counts the entries of ``steps`` (its first entry
    is 0) that are <= e. Before ``warmup_epochs`` the rate rises linearly from ``warmup_start`` to the
    policy's value at ``warmup_epochs``.
    """

    base_lr: float
    warmup_start_lr: float
    cosine_end_lr: float
    warmup_epochs: float
    max_epoch: float
    policy: str = "cosine"
    cosine_after_warmup: bool = True
    steps: Sequence[float] = ()
    lrs: Sequence[float] = ()

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> LrSchedule:
        base, start, end = scaled_learning_rates(cfg)
        return cls(
            base_lr=base,
            warmup_start_lr=start,
            cosine_end_lr=end,
            warmup_epochs=float(cfg.SOLVER.WARMUP_EPOCHS),
            max_epoch=float(cfg.SOLVER.MAX_EPOCH),
            policy=cfg.SOLVER.LR_POLICY,
            cosine_after_warmup=cfg.SOLVER.COSINE_AFTER_WARMUP,
            steps=tuple(cfg.SOLVER.STEPS),
            lrs=tuple(cfg.SOLVER.LRS),
        )

    def _policy(self, e: float) -> float:
        if self.policy == "cosine":
            offset = self.warmup_epochs if self.cosine_after_warmup else 0.0
            span = self.max_epoch - offset
            if span <= 0:
                raise ValueError(
                    f"cosine schedule needs SOLVER.MAX_EPOCH ({self.max_epoch}) > SOLVER.WARMUP_EPOCHS "
                    f"({self.warmup_epochs}) when COSINE_AFTER_WARMUP"
                )
            frac = min(max((e - offset) / span, 0.0), 1.0)
            return self.cosine_end_lr + (self.base_lr - self.cosine_end_lr) * 0.5 * (
                1.0 + math.cos(math.pi * frac)
            )
        if self.policy == "steps_with_relative_lrs":
            if len(self.lrs) != len(self.steps) or not self.steps:
                raise ValueError(
                    f"steps_with_relative_lrs needs SOLVER.STEPS and SOLVER.LRS of equal, non-zero length "
                    f"(got {list(self.steps)} and {list(self.lrs)})"
                )
            index = sum(1 for s in self.steps if s <= e) - 1
            return self.base_lr * self.lrs[max(index, 0)]
        raise ValueError(f"SOLVER.LR_POLICY = {self.policy!r} is not one of cosine, steps_with_relative_lrs")

    def lr_at(self, epoch: float) -> float:
        """The learning rate at fractional epoch ``epoch``."""
        if epoch < self.warmup_epochs:
            target = self._policy(self.warmup_epochs)
            return self.warmup_start_lr + epoch * (target - self.warmup_start_lr) / self.warmup_epochs
        return self._policy(epoch)
