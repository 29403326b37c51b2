"""Video models (UniFormer, MViT, SlowFast), their registry, and weight loading."""

from nightcrawler.models.build import MODEL_REGISTRY, build_model, registered_models, unwrap_model
from nightcrawler.models.checkpoint import (
    CheckpointError,
    LoadReport,
    load_checkpoint_weights,
    load_pretrained,
    load_weights_from_cfg,
)
from nightcrawler.models.registry import ModelCard, get_card, model_card

__all__ = [
    "MODEL_REGISTRY",
    "CheckpointError",
    "LoadReport",
    "ModelCard",
    "build_model",
    "get_card",
    "load_checkpoint_weights",
    "load_pretrained",
    "load_weights_from_cfg",
    "model_card",
    "registered_models",
    "unwrap_model",
]
