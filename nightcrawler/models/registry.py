"""The model registry and each model's card: what the generic code needs to know about a model family.

A model file registers its factory ``f(cfg) -> nn.Module`` and declares its card beside it::

    @MODEL_REGISTRY.register()
    @model_card(fingerprint=lambda keys: "stem.weight" in keys, classifier="head", outputs="logits")
    def MyNet(cfg):
        return MyNet3D(num_classes=cfg.MODEL.NUM_CLASSES)

``MODEL.MODEL_NAME`` names the factory. A model without a card gets :class:`ModelCard`'s defaults. A user's model
registers the same way from a module listed in the config's ``IMPORTS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from fvcore.common.registry import Registry
from torch import nn

MODEL_REGISTRY = Registry("MODEL")
MODEL_REGISTRY.__doc__ = "Model factories ``f(cfg) -> nn.Module``, keyed by ``MODEL.MODEL_NAME``."

OUTPUT_KINDS = ("logits", "probabilities")
# (state dict, the model's state dict, source layout, notes) -> state dict in the model's naming; notes is a
# dict the filter may fill with "inflated" / "dropped" key lists (they go into the load report)
CheckpointFilter = Callable[
    [dict[str, torch.Tensor], Mapping[str, torch.Tensor], str, dict], dict[str, torch.Tensor]
]


@dataclass(frozen=True)
class ModelCard:
    """What the generic code needs to know about one model family.

    Attributes:
        name: the registered name (``MODEL.MODEL_NAME``).
        fingerprint: True when a set of state-dict keys is this family's (checkpoint checks; None: unknown).
        classifier: module name of the final ``nn.Linear`` (None: the model's last Linear).
        pretrained_key: ``SECTION.KEY`` naming zoo weights loaded before training (``MODEL.PRETRAIN_NAME`` by
            default).
        checkpoint_filter: converts other codebases' checkpoints into the model's naming (see
            :data:`CheckpointFilter`); runs after the generic renames.
        check_config: raises ValueError when a config cannot feed this model (input sizes, frame counts).
        outputs: ``logits``, or ``probabilities`` for a model that applies softmax itself in eval mode.
        unused_parameters: the forward leaves parameters without gradient (DDP must look for them).
    """

    name: str
    fingerprint: Callable[[set[str]], bool] | None = None
    classifier: str | None = None
    pretrained_key: str = "MODEL.PRETRAIN_NAME"
    checkpoint_filter: CheckpointFilter | None = None
    check_config: Callable[[Any], None] | None = None
    outputs: str = "logits"
    unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.outputs not in OUTPUT_KINDS:
            raise ValueError(
                f"model {self.name}: outputs must be one of {OUTPUT_KINDS}, got {self.outputs!r}"
            )


def model_card(
    name: str | None = None, **fields: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator declaring a factory's :class:`ModelCard` (put it below ``@MODEL_REGISTRY.register()``).

    ``name`` registers the factory under another name than its own (e.g. ``uniformer_from_cfg`` as
    ``Uniformer``, the name its model class also has).
    """

    def attach(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name:
            factory.__name__ = name
        factory.card = ModelCard(name=factory.__name__, **fields)
        return factory

    return attach


def registered_models() -> list[str]:
    """The accepted ``MODEL.MODEL_NAME`` values."""
    return sorted(name for name, _ in MODEL_REGISTRY)


def get_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``; raises KeyError naming the registered models."""
    if name not in MODEL_REGISTRY:
        raise KeyError(
            f"MODEL.MODEL_NAME {name!r} is not a registered model; choose one of {registered_models()} "
            "(or register yours from a module listed in IMPORTS)"
        )
    return MODEL_REGISTRY.get(name)


def get_card(name: str) -> ModelCard:
    """The card of the registered model ``name`` (defaults when its factory declares none)."""
    return getattr(get_factory(name), "card", None) or ModelCard(name=name)


def cards() -> list[ModelCard]:
    """Cards of every registered model."""
    return [get_card(name) for name in registered_models()]


def card_for_keys(keys: Iterable[str]) -> ModelCard | None:
    """The card whose fingerprint matches a state dict's keys (None: no registered family does)."""
    keys = set(keys)
    for card in cards():
        if card.fingerprint is not None and card.fingerprint(keys):
            return card
    return None


def check_model_config(cfg: Any) -> None:
    """Raises KeyError for an unregistered ``MODEL.MODEL_NAME`` and ValueError when the model's card rejects
    the config."""
    card = get_card(cfg.MODEL.MODEL_NAME)
    if card.check_config is not None:
        card.check_config(cfg)
