"""Loading weights into a model from every checkpoint layout the project meets.

Supported layouts (detected from the file's content, not its name):

* ``pyth``: the original's / our own ``.pyth`` and PySlowFast zoo files: ``{"model_state": ..., "epoch",
  "optimizer_state", "cfg", ...}`` (``cfg`` is a YAML string when present);
* ``alphaction``: AlphAction SlowFast files: ``{"model": ...}`` with ``module.`` / ``backbone.`` in the key
  names (SF's checkpoint filter converts them);
* ``model`` / ``state_dict``: zoo files (UniFormer video / ImageNet) with the weights under that key;
* ``plain``: a flat state dict;
* ``torchvision``: a flat state dict of torchvision's ``mvit_v1_b`` (``torch.save(model.state_dict())``),
  recognised and renamed by MViT's checkpoint filter.

Every layout goes through :func:`convert_state_dict`: rename (``TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN``,
wrappers), the model card's ``checkpoint_filter`` (e.g. UniFormer's 2-D -> 3-D inflation, SF's AlphAction
names, torchvision's MViT names; a filter that recognises a layout names it in ``notes["source_format"]``),
check that the file is for this kind of model (the registered cards' fingerprints), inflate any 2-D
kernel with ``TRAIN.CHECKPOINT_INFLATE``, drop a classifier whose class count differs, and then compare with
the model. Nothing here knows a particular model: the cards in :mod:`nightcrawler.models.registry` do. By default anything else that does not match is an error listing the missing,
unexpected and shape-mismatched keys; ``strict=False`` loads the matching part and logs the rest.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from nightcrawler.models.build import unwrap_model
from nightcrawler.models.registry import ModelCard, card_for_keys, cards, get_card

logger = logging.getLogger(__name__)

PRETRAIN_DIR_ENV = "NIGHTCRAWLER_PRETRAIN_DIR"
DEFAULT_PRETRAIN_DIR = "./pretrained"
PRETRAIN_SUFFIXES = ("", ".pth", ".pyth")
_LIST_LIMIT = 20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, is for another model, or does not match the model."""


@dataclass
class LoadReport:
    """What happened to every key while loading one checkpoint."""

    path: str
    source_format: str
    checkpoint_arch: str | None
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    renamed: int = 0

    @property
    def clean(self) -> bool:
        """True when nothing outside the deliberately dropped keys failed to match."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """Multi-line description of the missing / unexpected / mismatched keys."""
        lines = []
        if self.missing:
            lines.append(f"missing from the checkpoint ({len(self.missing)}): {_short_list(self.missing)}")
        if self.unexpected:
            lines.append(f"not in the model ({len(self.unexpected)}): {_short_list(self.unexpected)}")
        if self.mismatched:
            items = [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            lines.append(f"shape mismatches ({len(items)}): {_short_list(items)}")
        return "\n".join(lines)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded from {self.path} (format {self.source_format})"]
        if self.inflated:
            parts.append(f"{len(self.inflated)} 2-D kernels inflated to 3-D")
        if self.dropped:
            parts.append(f"dropped: {_short_list(self.dropped)}")
        return "; ".join(parts)


def _short_list(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


# ---------------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> Any:
    """``torch.load`` on the CPU. Without ``allow_pickle`` only tensors and plain containers are accepted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        found = [line.strip() for line in str(exc).splitlines() if "Unsupported global" in line]
        if not found:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
        raise CheckpointError(
            f"{path}: holds pickled Python objects beyond tensors and plain containers, which are not loaded "
            f"by default ({found[0]}). If you trust the file, convert it once with "
            f"`tools/convert_checkpoint.py --allow-pickle`"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def unpack_checkpoint(obj: Any, path: str = "<checkpoint>") -> tuple[dict[str, torch.Tensor], str, dict]:
    """Splits a loaded checkpoint into (state dict, layout name, metadata such as ``cfg`` and ``epoch``)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict at top level, got {type(obj).__name__}")
    if _is_state_dict(obj):
        return dict(obj), "plain", {}
    meta = {k: v for k, v in obj.items() if k in ("cfg", "epoch")}
    if _is_state_dict(obj.get("model_state")):
        return dict(obj["model_state"]), "pyth", meta
    if _is_state_dict(obj.get("model")):
        sd = dict(obj["model"])
        if any(k.startswith(("backbone.", "module.backbone.", "cls_head.", "module.cls_head.")) for k in sd):
            return sd, "alphaction", meta
        return sd, "model", meta
    if _is_state_dict(obj.get("state_dict")):
        return dict(obj["state_dict"]), "state_dict", meta
    raise CheckpointError(
        f"{path}: unrecognised checkpoint layout (top-level keys: {_short_list([str(k) for k in obj])}); "
        "expected a state dict, or one under 'model_state', 'model' or 'state_dict'"
    )


# ---------------------------------------------------------------------------------------------------- model kinds
def guess_architecture(keys: Iterable[str]) -> str | None:
    """The registered model a set of state-dict keys belongs to (its name), a description of a known foreign
    layout, or None."""
    keys = set(keys)
    card = card_for_keys(keys)
    if card is not None:
        return card.name
    if any(k.startswith("s1.pathway0_stem.") for k in keys):
        return "PySlowFast SlowFast (two-pathway layout, not the SF/AlphAction layout)"
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "a torchvision-style 2-D ResNet"
    if "conv_proj.weight" in keys and any(k.startswith("blocks.") and ".rel_pos_" in k for k in keys):
        return "torchvision MViT v2 (mvit_v2_s, which no Nightcrawler model implements)"
    return None


def _foreign_family(sd: dict[str, torch.Tensor], source_format: str, own: ModelCard | None) -> str | None:
    """The registered family whose own checkpoint filter turns ``sd`` into its layout (e.g. an AlphAction SF
    file offered to another model), or None."""
    for card in cards():
        if card is own or card.checkpoint_filter is None or card.fingerprint is None:
            continue
        try:
            converted = card.checkpoint_filter(dict(sd), {}, source_format, {})
        except (KeyError, ValueError):
            continue
        if card.fingerprint(set(converted)):
            return card.name
    return None


def _cfg_model_name(cfg_text: Any) -> str | None:
    """``MODEL.MODEL_NAME`` from a checkpoint's YAML ``cfg`` string, if it has one."""
    if not isinstance(cfg_text, str):
        return None
    try:
        data = yaml.safe_load(cfg_text)
    except yaml.YAMLError:
        return None
    if isinstance(data, Mapping) and isinstance(data.get("MODEL"), Mapping):
        name = data["MODEL"].get("MODEL_NAME")
        return name if isinstance(name, str) else None
    return None


def _model_card(model: nn.Module) -> ModelCard | None:
    return card_for_keys(unwrap_model(model).state_dict().keys())


def classifier_prefix(model: nn.Module, card: ModelCard | None = None) -> str | None:
    """Name of the model's final ``nn.Linear`` classifier: its card's ``classifier``, else its last Linear."""
    modules = dict(unwrap_model(model).named_modules())
    card = card or _model_card(model)
    if card is not None and card.classifier and isinstance(modules.get(card.classifier), nn.Linear):
        return card.classifier
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


# ---------------------------------------------------------------------------------------------------- conversion
def _rename(sd: dict[str, torch.Tensor], source_format: str, patterns: Iterable[str]) -> tuple[dict, int]:
    renamed = 0
    for pattern in patterns:
        if not pattern:
            continue
        new = {}
        for k, v in sd.items():
            nk = k.replace(pattern, "", 1)
            renamed += nk != k
            new[nk] = v
        sd = new
    out = {}
    for k, v in sd.items():
        nk = k[len("module.") :] if k.startswith("module.") else k
        renamed += nk != k
        if nk in out:
            raise CheckpointError(f"two checkpoint keys map to {nk!r} after renaming")
        out[nk] = v
    return out, renamed


def inflate_2d_kernels(
    sd: dict[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Generic 2-D -> 3-D inflation (``TRAIN.CHECKPOINT_INFLATE``): a 4-D kernel whose 5-D model counterpart
    has the same (out, in, h, w) is repeated T times along time and divided by T."""
    out, inflated = dict(sd), []
    for k, v in sd.items():
        target = model_sd.get(k)
        if target is None or v.dim() != 4 or target.dim() != 5:
            continue
        if tuple(v.shape[:2]) != tuple(target.shape[:2]) or tuple(v.shape[2:]) != tuple(target.shape[3:]):
            continue
        t = target.shape[2]
        out[k] = v.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        inflated.append(k)
    return out, inflated


def convert_state_dict(
    sd: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    source_format: str = "plain",
    path: str = "<checkpoint>",
    meta: Mapping[str, Any] | None = None,
    inflate: bool = False,
    clear_name_patterns: Iterable[str] = (),
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Turns a checkpoint's state dict into ``model``'s naming and shapes, and reports the differences.

    Raises :class:`CheckpointError` when the weights are recognisably for another model.
    """
    model_sd = model.state_dict()
    card = card_for_keys(model_sd.keys())
    sd, renamed = _rename(dict(sd), source_format, clear_name_patterns)
    report = LoadReport(path=path, source_format=source_format, checkpoint_arch=None, renamed=renamed)
    if card is not None and card.checkpoint_filter is not None:
        notes: dict[str, Any] = {}
        try:
            sd = card.checkpoint_filter(sd, model_sd, source_format, notes)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: {str(exc).strip(chr(39))}") from exc
        report.source_format = notes.get("source_format", source_format)
        report.inflated += notes.get("inflated", [])
        for k in notes.get("dropped", []):
            logger.info("%s: %s not loaded (%s's checkpoint filter dropped it)", path, k, card.name)
            report.dropped.append(k)

    cfg_name = _cfg_model_name((meta or {}).get("cfg"))
    report.checkpoint_arch = guess_architecture(sd) or _foreign_family(sd, source_format, card) or cfg_name
    model_arch = card.name if card is not None else None
    for claimed in (report.checkpoint_arch, cfg_name):
        if claimed and model_arch and claimed != model_arch:
            raise CheckpointError(
                f"{path} seems to hold weights for {claimed}, but the model being loaded is {model_arch} "
                f"(check MODEL.MODEL_NAME and the checkpoint path)"
            )

    if inflate:
        sd, inflated = inflate_2d_kernels(sd, model_sd)
        report.inflated += inflated

    head = classifier_prefix(model, card)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head else set()
    for k in sorted(head_keys):
        if k in sd and k in model_sd and sd[k].shape != model_sd[k].shape:
            logger.info(
                "%s: classifier %s has shape %s, the model %s (class counts differ): not loaded",
                path,
                k,
                tuple(sd[k].shape),
                tuple(model_sd[k].shape),
            )
            del sd[k]
            report.dropped.append(k)

    for k in list(sd):
        if k.endswith("num_batches_tracked") and k not in model_sd:
            # a frozen BatchNorm has no counter; the trainable one it was saved from did
            parent = k[: -len("num_batches_tracked")]
            if parent + "running_mean" in model_sd:
                del sd[k]

    for k, target in model_sd.items():
        if k not in sd:
            # a missing classifier keeps its initialisation; a missing BN counter starts at 0
            if k not in head_keys and not k.endswith("num_batches_tracked"):
                report.missing.append(k)
        elif sd[k].shape != target.shape:
            report.mismatched.append((k, tuple(sd[k].shape), tuple(target.shape)))
        else:
            report.loaded.append(k)
    report.unexpected = [k for k in sd if k not in model_sd]
    return sd, report


# ---------------------------------------------------------------------------------------------------- loading
def load_state_dict_checked(
    model: nn.Module, sd: Mapping[str, torch.Tensor], report: LoadReport, *, strict: bool = True
) -> LoadReport:
    """Loads converted weights: strict raises on any problem in ``report``; otherwise loads what matches."""
    if strict and not report.clean:
        raise CheckpointError(
            f"{report.path} does not match the model (pass strict=False / MODEL.PRETRAIN_STRICT False to load "
            f"the matching part):\n{report.problems()}"
        )
    if not report.loaded:
        raise CheckpointError(
            f"{report.path}: no tensor of the checkpoint matches the model\n{report.problems()}"
        )
    if not report.clean:
        logger.warning("partial load of %s:\n%s", report.path, report.problems())
    to_load = {k: sd[k] for k in report.loaded}
    result = model.load_state_dict(to_load, strict=False)
    leftovers = [k for k in result.unexpected_keys]
    if leftovers:  # cannot happen when the report was built for this model
        raise CheckpointError(f"{report.path}: keys rejected by the model: {_short_list(leftovers)}")
    logger.info("%s", report.summary())
    return report


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    strict: bool = True,
    inflate: bool = False,
    clear_name_patterns: Iterable[str] = (),
    allow_pickle: bool = False,
) -> LoadReport:
    """Loads any supported checkpoint file into ``model`` (a bare module) and returns what happened.

    ``num_classes``, when given, must equal the model's classifier width; a checkpoint classifier of another
    width is dropped (logged) and the model's head keeps its initialisation.
    """
    model = unwrap_model(model)
    head = classifier_prefix(model)
    if num_classes is not None and head is not None:
        width = dict(model.named_modules())[head].out_features
        if width != num_classes:
            raise ValueError(
                f"num_classes is {num_classes} but the model's classifier {head} has {width} outputs"
            )
    path = str(path)
    sd, source_format, meta = unpack_checkpoint(read_checkpoint(path, allow_pickle=allow_pickle), path)
    sd, report = convert_state_dict(
        sd,
        model,
        source_format=source_format,
        path=path,
        meta=meta,
        inflate=inflate,
        clear_name_patterns=clear_name_patterns,
    )
    return load_state_dict_checked(model, sd, report, strict=strict)


def resolve_pretrained_path(name: str, pretrain_dir: str = "") -> Path:
    """A path as given, or ``name[.pth|.pyth]`` in ``pretrain_dir`` (empty: ``$NIGHTCRAWLER_PRETRAIN_DIR`` or
    ``./pretrained``)."""
    given = Path(name).expanduser()
    if given.is_file():
        return given
    folder = Path(pretrain_dir or os.environ.get(PRETRAIN_DIR_ENV) or DEFAULT_PRETRAIN_DIR).expanduser()
    tried = [folder / f"{name}{suffix}" for suffix in PRETRAIN_SUFFIXES]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"pretrained weights {name!r} not found; tried {given} and {', '.join(map(str, tried))}. Put the file "
        f"there, set MODEL.PRETRAIN_DIR or ${PRETRAIN_DIR_ENV}, or give PRETRAIN_NAME None to skip"
    )


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None", "none"))


def pretrained_name_key(cfg) -> str:
    """``SECTION.KEY`` naming the zoo weights of ``MODEL.MODEL_NAME`` (its card's ``pretrained_key``)."""
    return get_card(cfg.MODEL.MODEL_NAME).pretrained_key


def load_weights_from_cfg(model: nn.Module, cfg) -> LoadReport | None:
    """Loads the zoo weights the model's card names (``UNIFORMER.PRETRAIN_NAME``, ``SF.PRETRAIN_NAME``,
    ``MODEL.PRETRAIN_NAME`` for the others) into ``model``.

    Returns None when that key is "None" / empty. Strictness follows ``MODEL.PRETRAIN_STRICT``.
    """
    full_key = pretrained_name_key(cfg)
    section, key = full_key.split(".")
    name = cfg[section][key]
    if _is_unset(name):
        return None
    path = resolve_pretrained_path(str(name), cfg.MODEL.PRETRAIN_DIR)
    logger.info("loading %s.%s weights from %s", section, key, path)
    return load_pretrained(model, path, num_classes=cfg.MODEL.NUM_CLASSES, strict=cfg.MODEL.PRETRAIN_STRICT)


def require_trained_classifier(model: nn.Module, report: LoadReport) -> None:
    """Raises CheckpointError when loading dropped ``model``'s classifier (class counts differ): testing or
    adapting a model only makes sense with the classifier it was trained with, never a fresh one."""
    head = classifier_prefix(unwrap_model(model))
    dropped = [k for k in report.dropped if head and k.startswith(f"{head}.")]
    if dropped:
        width = dict(unwrap_model(model).named_modules())[head].out_features
        raise CheckpointError(
            f"{report.path}: its classifier ({', '.join(dropped)}) does not fit the model's {width} classes "
            f"(MODEL.NUM_CLASSES = {width}); set MODEL.NUM_CLASSES to the checkpoint's class count"
        )


def load_checkpoint_weights(
    model: nn.Module, path: str | os.PathLike, cfg, *, strict: bool = True
) -> LoadReport:
    """Weights of ``TRAIN/TEST.CHECKPOINT_FILE_PATH`` with the original's knobs
    ``TRAIN.CHECKPOINT_INFLATE`` and ``TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN`` (optimizer state is the
    engine's business)."""
    return load_pretrained(
        model,
        path,
        num_classes=cfg.MODEL.NUM_CLASSES,
        strict=strict,
        inflate=cfg.TRAIN.CHECKPOINT_INFLATE,
        clear_name_patterns=tuple(cfg.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN),
    )
