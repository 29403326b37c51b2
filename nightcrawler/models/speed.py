"""Opt-in speed-ups of a built model: channels-last-3d weights and ``torch.compile``.

Both leave the model's parameters, buffers and ``state_dict`` keys as they are (checkpoints written with
either on load into a model without them, and back), and neither changes what the model computes beyond
floating-point rounding:

* ``channels_last``: every 5-D parameter and buffer (the Conv3d kernels) is stored channels-last-3d, so
  cuDNN / oneDNN convolutions can skip their layout conversions (``MODEL.CHANNELS_LAST``);
* ``compile_mode``: ``nn.Module.compile`` in place (TorchInductor), which keeps the module object and its
  keys, unlike the ``_orig_mod.`` wrapper that ``torch.compile(model)`` returns (``MODEL.COMPILE``,
  ``MODEL.COMPILE_MODE``). The first iterations after it pay the compilation.

Whether either helps depends on the model and the device: docs/PERFORMANCE.md ("Speed-ups") gives the
same-run ratios that decided the defaults (both off).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def to_channels_last(model: nn.Module) -> nn.Module:
    """Stores ``model``'s 5-D tensors channels-last-3d (in place; returns ``model``)."""
    return model.to(memory_format=torch.channels_last_3d)


def compile_in_place(model: nn.Module, mode: str = "default", *, backend: str = "inductor") -> nn.Module:
    """Compiles ``model``'s forward in place (``nn.Module.compile``) with TorchInductor in ``mode``, or with
    another dynamo ``backend`` (tests trace the models with ``aot_eager``, which skips code generation);
    returns ``model``."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if backend == "inductor":
        model.compile(mode=mode)
    else:
        model.compile(backend=backend)
    return model


def speed_up(model: nn.Module, *, channels_last: bool = False, compile_mode: str | None = None) -> nn.Module:
    """Applies the chosen speed-ups to ``model`` in place (channels-last first, then compilation)."""
    if channels_last:
        to_channels_last(model)
    if compile_mode:
        compile_in_place(model, compile_mode)
    if channels_last or compile_mode:
        done = ["channels-last-3d"] * channels_last + [f"torch.compile ({compile_mode})"] * bool(compile_mode)
        logger.info("model speed-ups: %s", ", ".join(done))
    return model


def speed_up_from_cfg(model: nn.Module, cfg) -> nn.Module:
    """:func:`speed_up` with ``MODEL.CHANNELS_LAST``, ``MODEL.COMPILE`` and ``MODEL.COMPILE_MODE``."""
    mode = cfg.MODEL.COMPILE_MODE if cfg.MODEL.COMPILE else None
    return speed_up(model, channels_last=bool(cfg.MODEL.CHANNELS_LAST), compile_mode=mode)
