"""The configuration tree: ``get_cfg()`` defaults, validated loading, and consistency checks."""

from nightcrawler.config.checks import assert_and_infer_cfg, check_input_paths
from nightcrawler.config.defaults import get_cfg
from nightcrawler.config.loading import ConfigError, flat_items, load_config, set_flat

__all__ = [
    "ConfigError",
    "assert_and_infer_cfg",
    "check_input_paths",
    "flat_items",
    "get_cfg",
    "load_config",
    "set_flat",
]
