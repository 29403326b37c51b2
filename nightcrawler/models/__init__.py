"""Video models (UniFormer, MViT, SlowFast), their registry, and weight loading."""

from nightcrawler.models.build import MODEL_REGISTRY, build_model, registered_models, unwrap_model
from nightcrawler.models.checkpoint import (
    CheckpointError,
    LoadReport,
    load_checkpoint_weights,
    load_pretrained,
    load_weights_from_cfg,
)

__all__ = [
    "MODEL_REGISTRY",
    "CheckpointError",
    "LoadReport",
    "build_model",
    "load_checkpoint_weights",
    "load_pretrained",
    "load_weights_from_cfg",
    "registered_models",
    "unwrap_model",
]
