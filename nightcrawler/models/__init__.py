"""Video models (UniFormer, MViT, SlowFast), their registry and checkpoint loading."""

from nightcrawler.models.build import MODEL_REGISTRY, build_model, registered_models, unwrap_model

__all__ = ["MODEL_REGISTRY", "build_model", "registered_models", "unwrap_model"]
