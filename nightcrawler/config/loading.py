"""Loading configuration: defaults <- YAML file(s) (with ``_BASE_`` includes) <- ``KEY VALUE`` overrides.

Every merge is validated: an unknown key or a value of the wrong type raises :class:`ConfigError` naming the
key, where it came from (file or command line) and the closest valid key names.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from yacs.config import CfgNode

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A configuration file or override that does not fit the key tree."""


class FrozenConfigError(ConfigError, AttributeError):
    """A merge or ``set_key`` into a frozen config (an AttributeError too, as yacs raises on frozen nodes)."""


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _coerce(value: Any, default: Any, full_key: str, source: str) -> Any:
    """Returns ``value`` converted to the type of ``default``, or raises ConfigError."""
    if isinstance(default, CfgNode):
        raise ConfigError(
            f"{source}: {full_key} is a section; give its keys, e.g. {full_key}.{next(iter(default))}"
        )
    if value is None or default is None:
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(_coerce_items(value, default, full_key, source))
    if type(value) is type(default):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        # e.g. a numeric OUTPUT_DIR name on the command line
        return str(value)
    raise ConfigError(
        f"{source}: {full_key} expects a value of type {type(default).__name__} (default {default!r}), "
        f"got {value!r} of type {type(value).__name__}"
    )


def _item_kind(item: Any) -> type:
    return list if isinstance(item, (list, tuple)) else type(item)


def _coerce_items(items: Sequence[Any], default: Sequence[Any], full_key: str, source: str) -> list[Any]:
    """The items of a list value, checked against the item types of the default list.

    An empty default (or one holding None) accepts anything; ints go into float lists as floats (bools never
    count as ints); inner lists are checked against the items of all the default's inner lists (e.g.
    ``UNIFORMER.PRUNE_RATIO``).
    """
    kinds = {_item_kind(d) for d in default}
    if not kinds or type(None) in kinds:
        return list(items)
    out = []
    for i, item in enumerate(items):
        kind = _item_kind(item)
        if kind is list and list in kinds:
            inner = [x for d in default if isinstance(d, (list, tuple)) for x in d]
            out.append(type(item)(_coerce_items(item, inner, f"{full_key}[{i}]", source)))
        elif kind in kinds:
            out.append(item)
        elif kinds == {float} and kind is int:
            out.append(float(item))
        else:
            expected = " or ".join(sorted(k.__name__ for k in kinds))
            raise ConfigError(
                f"{source}: {full_key} expects a list of {expected} items (default {list(default)!r}), "
                f"got item {i} = {item!r} of type {type(item).__name__} in {list(items)!r}"
            )
    return out


def _check_not_frozen(node: CfgNode, full_key: str, value: Any, source: str) -> None:
    if node.is_frozen():
        raise FrozenConfigError(
            f"{source}: cannot set {full_key} to {value!r}: the config is frozen (call defrost() first)"
        )


def _unknown_key_error(cfg: CfgNode, full_key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(full_key, _all_keys(cfg), n=3, cutoff=0.5)
    hint = f"; closest valid keys: {', '.join(close)}" if close else ""
    return ConfigError(f"{source}: unknown config key {full_key}{hint}")


_warned_legacy: set[str] = set()


def _legacy_target(root: CfgNode, full_key: str, source: str) -> tuple[CfgNode, str] | None:
    """(node, key) under ``LEGACY`` holding an inert key of the original's tree, warning once per key."""
    from nightcrawler.config.defaults import LEGACY_KEYS

    if full_key not in LEGACY_KEYS or "LEGACY" not in root:
        return None
    if full_key not in _warned_legacy:
        _warned_legacy.add(full_key)
        logging.getLogger(__name__).warning(
            "%s: %s has no effect in Nightcrawler (a key of the original's tree); kept as LEGACY.%s",
            source,
            full_key,
            full_key,
        )
    section, key = full_key.split(".")
    return root.LEGACY[section], key


def merge_mapping(
    cfg: CfgNode, mapping: Mapping, source: str, prefix: str = "", root: CfgNode | None = None
) -> None:
    """Merges a nested mapping into ``cfg`` in place, validating every key and value (inert keys of the original's
    tree go to ``LEGACY``)."""
    root = cfg if root is None else root
    for key, value in mapping.items():
        full_key = f"{prefix}{key}"
        if key not in cfg:
            legacy = _legacy_target(root, full_key, source)
            if legacy is None:
                raise _unknown_key_error(root, full_key, source)
            node, name = legacy
            _check_not_frozen(node, full_key, value, source)
            dict.__setitem__(node, name, _coerce(value, node[name], full_key, source))
            continue
        current = cfg[key]
        if isinstance(current, CfgNode):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {full_key} is a section and needs a mapping, got {value!r}")
            merge_mapping(current, value, source, full_key + ".", root)
        else:
            _check_not_frozen(cfg, full_key, value, source)
            dict.__setitem__(cfg, key, _coerce(value, current, full_key, source))


def read_yaml_with_bases(path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """Returns the YAML mappings to merge, bases first, each with its file name.

    A repeated key inside one file keeps its last value (PyYAML's behaviour, and the original's).
    """
    path = os.path.abspath(os.fspath(path))
    if path in _seen:
        raise ConfigError(f"{path}: circular {BASE_KEY} include ({' -> '.join(_seen + (path,))})")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config keys at top level, got {type(data).__name__}"
        )
    layers: list[tuple[str, dict]] = []
    bases = data.pop(BASE_KEY, None)
    if bases:
        for base in [bases] if isinstance(bases, str) else bases:
            base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
            layers.extend(read_yaml_with_bases(base_path, _seen + (path,)))
    layers.append((path, data))
    return layers


def parse_override_value(text: Any) -> Any:
    """Interprets a command-line value like yacs: a Python literal when it parses as one, else a string."""
    import ast

    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


class NightcrawlerCfgNode(CfgNode):
    """A yacs CfgNode whose merges validate keys and types with helpful errors."""

    def merge_from_file(self, cfg_filename: str) -> None:
        for source, mapping in read_yaml_with_bases(cfg_filename):
            merge_mapping(self, mapping, source)

    def merge_from_other_cfg(self, cfg_other: CfgNode) -> None:
        merge_mapping(self, cfg_other, "merged config")

    def merge_from_list(self, cfg_list: Sequence[Any]) -> None:
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"command line: overrides must be KEY VALUE pairs, got an odd list: {list(cfg_list)}"
            )
        for full_key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
            self.set_key(str(full_key), parse_override_value(raw), "command line")

    def set_key(self, full_key: str, value: Any, source: str = "code") -> None:
        """Sets one ``SECTION.KEY`` to an already-parsed value, validating key and type."""
        node: CfgNode = self
        parts = full_key.split(".")
        legacy = _legacy_target(self, full_key, source)
        if legacy is not None:
            node, name = legacy
            _check_not_frozen(node, full_key, value, source)
            dict.__setitem__(node, name, _coerce(value, node[name], full_key, source))
            return
        for depth, part in enumerate(parts):
            if not isinstance(node, CfgNode) or part not in node:
                raise _unknown_key_error(self, full_key, source)
            if depth < len(parts) - 1:
                node = node[part]
        _check_not_frozen(node, full_key, value, source)
        dict.__setitem__(node, parts[-1], _coerce(value, node[parts[-1]], full_key, source))


def load_config(cfg_file: str | None = None, opts: Iterable[Any] | None = None) -> CfgNode:
    """Defaults, then ``cfg_file`` (with ``_BASE_`` includes), then ``KEY VALUE`` overrides; then the modules
    of ``IMPORTS`` are imported (relative ``.py`` paths are relative to the config file's folder)."""
    from nightcrawler.config.defaults import get_cfg
    from nightcrawler.utils.imports import import_modules

    cfg = get_cfg()
    if cfg_file:
        cfg.merge_from_file(cfg_file)
    if opts:
        cfg.merge_from_list(list(opts))
    if cfg.IMPORTS:
        base = os.path.dirname(os.path.abspath(cfg_file)) if cfg_file else os.getcwd()
        cfg.IMPORTS = [
            os.path.join(base, m) if m.endswith(".py") and not os.path.isabs(m) else m for m in cfg.IMPORTS
        ]
        try:
            import_modules(cfg.IMPORTS)
        except ImportError as exc:
            raise ConfigError(f"{cfg_file or 'config'}: {exc}") from exc
    return cfg


def flat_items(cfg: CfgNode, prefix: str = "") -> dict[str, Any]:
    """``{"SECTION.KEY": value}`` for every leaf of the tree."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, CfgNode):
            out.update(flat_items(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_flat(cfg: CfgNode, flat: Mapping[str, Any], source: str = "flat dict") -> None:
    """Sets ``{"SECTION.KEY": value}`` entries with the same validation as the command line."""
    for k, v in flat.items():
        cfg.set_key(k, v, source)
