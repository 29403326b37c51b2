"""YAML settings for pseudo labelling, threshold search and the ensemble vote, parsed into typed objects.

A YAML file may name a ``_base_`` file (relative to itself) whose content it extends: mappings merge key by key,
everything else is replaced. Errors name the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nightcrawler.pseudo.fuse import FusionSpec, Replacement, WeightRule
from nightcrawler.pseudo.io import PseudoLabelError
from nightcrawler.pseudo.thresholds import METHODS, SelectionSpec
from nightcrawler.resources import configs_root


def __getattr__(name: str) -> Any:
    # CONFIG_DIR: the shipped configs folder, resolved on each access (nightcrawler.resources.configs_root)
    if name == "CONFIG_DIR":
        return configs_root()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def merge_mappings(base: dict, override: Mapping) -> dict:
    """``base`` with ``override`` merged in key by key (nested mappings merged, other values replaced)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_mappings(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict:
    """Reads a YAML mapping, resolving ``_base_`` includes."""
    path = Path(path).resolve()
    if path in _seen:
        raise PseudoLabelError(f"{path}: '_base_' includes form a cycle")
    if not path.is_file():
        raise PseudoLabelError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise PseudoLabelError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise PseudoLabelError(f"{path}: expected a mapping at the top level")
    data = dict(data)
    base = data.pop("_base_", None)
    if base is not None:
        data = merge_mappings(load_yaml(path.parent / str(base), (*_seen, path)), data)
    return data


class _Reader:
    """Typed access to one YAML mapping with errors naming the file and key path."""

    def __init__(self, data: Any, source: str, prefix: str = ""):
        if not isinstance(data, Mapping):
            raise PseudoLabelError(
                f"{source}: '{prefix or '<top>'}' must be a mapping, got {type(data).__name__}"
            )
        self.data, self.source, self.prefix = data, source, prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, message: str) -> PseudoLabelError:
        return PseudoLabelError(f"{self.source}: '{self._key(key)}' {message}")

    def get(self, key: str, default: Any = ..., kind: type | tuple[type, ...] | None = None) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        wrong_type = kind is not None and not isinstance(value, kind)
        bool_as_number = isinstance(value, bool) and kind in (int, float)
        if wrong_type or bool_as_number:
            raise self.error(key, f"must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def sub(self, key: str, default: Any = ...) -> _Reader:
        return _Reader(self.get(key, default, Mapping), self.source, self._key(key))

    def number(self, key: str, default: Any = ...) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, got {value!r}")
        return float(value)

    def classes(self, key: str, num_classes: int) -> tuple[int, ...]:
        value = self.get(key, kind=list)
        if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < num_classes for c in value):
            raise self.error(key, f"must list class ids in 0..{num_classes - 1}, got {value!r}")
        return tuple(value)

    def weights(self, key: str, default: Any = ...) -> dict[str, float]:
        value = self.get(key, default, Mapping)
        out = {}
        for role, w in value.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise self.error(key, f"weight of '{role}' must be a number, got {w!r}")
            out[str(role)] = float(w)
        return out


def parse_fusion(data: Any, source: str, num_classes: int, prefix: str = "fusion") -> FusionSpec:
    """Parses a ``fusion`` block: weights, rules (``when: {model, argmax_in}``, ``weights``), replacements."""
    r = _Reader(data, source, prefix)
    rules = []
    for i, item in enumerate(r.get("rules", [], list)):
        rule = _Reader(item, source, f"{prefix}.rules[{i}]")
        when = rule.sub("when")
        rules.append(
            WeightRule(
                str(when.get("model", kind=str)),
                when.classes("argmax_in", num_classes),
                rule.weights("weights"),
            )
        )
    replacements = []
    for i, item in enumerate(r.get("replacements", [], list)):
        rep = _Reader(item, source, f"{prefix}.replacements[{i}]")
        replacements.append(
            Replacement(rep.classes("when_argmax_in", num_classes), str(rep.get("use", kind=str)))
        )
    try:
        return FusionSpec(
            weights=r.weights("weights"),
            rules=tuple(rules),
            replacements=tuple(replacements),
            precision=str(r.get("precision", "float32", str)),
            input_transform=str(r.get("input_transform", "softmax", str)),
            normalise=bool(r.get("normalise", False, bool)),
        )
    except PseudoLabelError as exc:
        raise PseudoLabelError(f"{source}: '{prefix}': {exc}") from None


def parse_selection(data: Any, source: str, num_classes: int, prefix: str = "selection") -> SelectionSpec:
    """Parses a ``selection`` block (method thresholds | all | mean_minus_k_std)."""
    r = _Reader(data, source, prefix)
    method = str(r.get("method", "thresholds", str))
    thresholds = None
    if method == "thresholds":
        values = r.get("thresholds", kind=list)
        if len(values) != num_classes or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise r.error("thresholds", f"must list {num_classes} numbers (one per class), got {values!r}")
        thresholds = tuple(float(v) for v in values)
    if method not in METHODS:  # a registered rule: every other key is its keyword argument
        params = {str(k): v for k, v in r.data.items() if k != "method"}
        try:
            return SelectionSpec(method=method, params=params)
        except PseudoLabelError as exc:
            raise PseudoLabelError(f"{source}: '{prefix}': {exc}") from None
    try:
        return SelectionSpec(
            method=method,
            thresholds=thresholds,
            k=r.number("k", 1.0),
            per_class=bool(r.get("per_class", False, bool)),
            ddof=int(r.get("ddof", 1, int)),
        )
    except PseudoLabelError as exc:
        raise PseudoLabelError(f"{source}: '{prefix}': {exc}") from None


@dataclass(frozen=True)
class ModelInput:
    """Where one model role's PKL lives: ``root / dir / pkl_name`` unless ``path`` is given."""

    dir: str | None = None
    pkl_name: str | None = None
    path: str | None = None

    def resolve(self, root: Path, default_name: str) -> Path:
        if self.path is not None:
            return root / self.path
        return root / (self.dir or ".") / (self.pkl_name or default_name)


def _parse_models(r: _Reader, key: str) -> dict[str, ModelInput]:
    models = {}
    for role, value in r.get(key, kind=Mapping).items():
        if isinstance(value, str):
            models[str(role)] = ModelInput(dir=value)
        elif isinstance(value, Mapping):
            m = _Reader(value, r.source, r._key(f"{key}.{role}"))
            models[str(role)] = ModelInput(
                m.get("dir", None, str), m.get("pkl_name", None, str), m.get("path", None, str)
            )
        else:
            raise r.error(
                f"{key}.{role}", "must be a folder (string) or a mapping with dir / pkl_name / path"
            )
    if not models:
        raise r.error(key, "must name at least one model")
    return models


@dataclass(frozen=True)
class StageConfig:
    """One pseudo-label stage: inputs, fusion, selection, output."""

    source: str
    name: str
    num_classes: int
    models: dict[str, ModelInput]
    pkl_name: str
    list_csv: str | None
    same_pkl_as: dict[str, str]
    fusion: FusionSpec
    selection: SelectionSpec
    output: str
    class_names: tuple[str, ...] = ()


def _class_names(r: _Reader, num_classes: int) -> tuple[str, ...]:
    names = r.get("class_names", [], list)
    if names and len(names) != num_classes:
        raise r.error("class_names", f"must list {num_classes} names, got {len(names)}")
    return tuple(str(x) for x in names)


def _check_roles(fusion: FusionSpec, models: Mapping[str, Any], source: str, where: str) -> None:
    unknown = [role for role in fusion.models if role not in models]
    if unknown:
        raise PseudoLabelError(
            f"{source}: {where} uses model(s) {unknown} not listed under 'models' ({sorted(models)})"
        )


def _import_user_modules(r: _Reader, folder: Path) -> None:
    """Imports the config's ``imports`` (module names, or ``.py`` files relative to the config's folder)."""
    from nightcrawler.utils.imports import import_modules

    names = [str(n) for n in r.get("imports", [], list)]
    names = [str(folder / n) if n.endswith(".py") and not Path(n).is_absolute() else n for n in names]
    try:
        import_modules(names)
    except ImportError as exc:
        raise r.error("imports", str(exc)) from exc


def load_stage_config(path: str | os.PathLike) -> StageConfig:
    """Reads ``configs/pseudo/stageX.yaml``."""
    source = str(path)
    r = _Reader(load_yaml(path), source)
    num_classes = int(r.get("num_classes", 11, int))
    _import_user_modules(r, Path(source).parent)
    inputs = r.sub("inputs")
    models = _parse_models(inputs, "models")
    same = {str(k): str(v) for k, v in inputs.get("same_pkl_as", {}, Mapping).items()}
    for slot, role in same.items():
        if slot not in models or role not in models:
            raise inputs.error(
                "same_pkl_as", f"maps '{slot}' -> '{role}', both must be listed under inputs.models"
            )
    fusion = parse_fusion(r.get("fusion"), source, num_classes)
    _check_roles(fusion, models, source, "'fusion'")
    return StageConfig(
        source=source,
        name=str(r.get("name", Path(source).stem)),
        num_classes=num_classes,
        models=models,
        pkl_name=str(inputs.get("pkl_name", kind=str)),
        list_csv=inputs.get("list_csv", None, str),
        same_pkl_as=same,
        fusion=fusion,
        selection=parse_selection(r.get("selection"), source, num_classes),
        output=str(r.get("output", kind=str)),
        class_names=_class_names(r, num_classes),
    )


def load_thresholds_file(path: str | os.PathLike, num_classes: int) -> SelectionSpec:
    """Reads a thresholds YAML written by the search (its ``selection`` block, or a bare ``thresholds`` list)."""
    data = load_yaml(path)
    block = data.get("selection", {"method": "thresholds", "thresholds": data.get("thresholds")})
    return parse_selection(block, str(path), num_classes)


@dataclass(frozen=True)
class ReassignRule:
    """One post-processing pass: rows predicted ``pred`` with P[prob_of] <= at_most move to the first
    ``(to, min_prob)`` whose P[to] >= min_prob."""

    pred: int
    prob_of: int
    at_most: float
    branches: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class ModeSpec:
    """One ensemble mode of the vote script."""

    name: str
    pkl_set: str  # name of the entry under ``pkl_sets``
    pkls: dict[str, str]  # role -> PKL file name (inside the role's folder)
    fusion: FusionSpec
    reassign: tuple[ReassignRule, ...]


@dataclass(frozen=True)
class VoteSpec:
    """Which modes vote and how: 'original' (count, ties to the smaller class id, row copied from the first
    mode file with that class) or 'majority' (count, ties broken by the summed normalised probability)."""

    modes: tuple[str, ...]
    method: str = "original"


@dataclass(frozen=True)
class EnsembleConfig:
    """The final ensemble: models, modes (fusion + post-processing), vote, file names."""

    source: str
    num_classes: int
    models: dict[str, ModelInput]
    modes: tuple[ModeSpec, ...]
    vote: VoteSpec
    test_csv: str
    out_dir: str
    per_mode_file: str
    submission_file: str
    details_file: str
    output_probability: str
    class_names: tuple[str, ...] = ()

    def mode(self, name: str) -> ModeSpec:
        for m in self.modes:
            if m.name == name:
                return m
        raise PseudoLabelError(
            f"{self.source}: no mode named '{name}' (modes: {[m.name for m in self.modes]})"
        )


VOTE_METHODS = ("original", "majority")
OUTPUT_PROBABILITIES = ("softmax_of_fused", "fused", "normalised_fused")


def _parse_reassign(items: Any, source: str, prefix: str, num_classes: int) -> tuple[ReassignRule, ...]:
    if not isinstance(items, list):
        raise PseudoLabelError(f"{source}: '{prefix}' must be a list of passes")
    rules = []
    for i, item in enumerate(items):
        r = _Reader(item, source, f"{prefix}[{i}]")
        when = r.sub("when")
        pred_id = int(when.get("pred", kind=int))
        prob_of = int(when.get("prob_of", pred_id, int))
        branches = []
        for j, br in enumerate(r.get("then", kind=list)):
            if not (
                isinstance(br, list)
                and len(br) == 2
                and isinstance(br[0], int)
                and isinstance(br[1], (int, float))
            ):
                raise r.error(f"then[{j}]", f"must be [new_class, min_probability], got {br!r}")
            branches.append((int(br[0]), float(br[1])))
        for c in (pred_id, prob_of, *(b[0] for b in branches)):
            if not 0 <= c < num_classes:
                raise r.error("when", f"class id {c} outside 0..{num_classes - 1}")
        rules.append(ReassignRule(pred_id, prob_of, when.number("at_most"), tuple(branches)))
    return tuple(rules)


def load_ensemble_config(path: str | os.PathLike) -> EnsembleConfig:
    """Reads ``configs/ensemble/*.yaml``."""
    source = str(path)
    r = _Reader(load_yaml(path), source)
    num_classes = int(r.get("num_classes", 11, int))
    models = _parse_models(r, "models")
    pkl_sets = r.get("pkl_sets", kind=Mapping)
    shared_fusion = r.get("fusion", {}, Mapping)
    modes = []
    for i, item in enumerate(r.get("modes", kind=list)):
        m = _Reader(item, source, f"modes[{i}]")
        name = str(m.get("name"))
        set_name = str(m.get("pkls", kind=str))
        if set_name not in pkl_sets:
            raise m.error(
                "pkls", f"names PKL set '{set_name}' not defined under 'pkl_sets' ({sorted(pkl_sets)})"
            )
        pkl_set = _Reader(pkl_sets[set_name], source, f"pkl_sets.{set_name}")
        fusion_data = merge_mappings(dict(shared_fusion), m.get("fusion", {}, Mapping))
        fusion = parse_fusion(fusion_data, source, num_classes, prefix=f"modes[{i}].fusion")
        _check_roles(fusion, models, source, f"mode '{name}'")
        pkls = {}
        for role in fusion.models:
            file_name = pkl_set.get(role, pkl_set.get("default", None, str), str)
            if file_name is None:
                raise pkl_set.error(role, "is missing and the set has no 'default' file name")
            pkls[role] = file_name
        modes.append(
            ModeSpec(
                name,
                set_name,
                pkls,
                fusion,
                _parse_reassign(m.get("reassign", []), source, f"modes[{i}].reassign", num_classes),
            )
        )
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise r.error("modes", f"mode names must be unique, got {names}")
    v = r.sub("vote")
    vote_modes = tuple(str(x) for x in v.get("modes", kind=list))
    unknown = [x for x in vote_modes if x not in names]
    if unknown or not vote_modes:
        raise v.error("modes", f"must name defined modes ({names}), got {list(vote_modes)}")
    method = str(v.get("method", "original", str))
    if method not in VOTE_METHODS:
        raise v.error("method", f"must be one of {VOTE_METHODS}, got {method!r}")
    files = r.sub("files", {})
    output_probability = str(r.get("output_probability", "softmax_of_fused", str))
    if output_probability not in OUTPUT_PROBABILITIES:
        raise r.error(
            "output_probability", f"must be one of {OUTPUT_PROBABILITIES}, got {output_probability!r}"
        )
    return EnsembleConfig(
        source=source,
        num_classes=num_classes,
        models=models,
        modes=tuple(modes),
        vote=VoteSpec(vote_modes, method),
        test_csv=str(r.get("test_csv", "data/test.csv", str)),
        out_dir=str(r.get("out_dir", "submission", str)),
        per_mode_file=str(files.get("per_mode", "arid_pred_{mode}.csv", str)),
        submission_file=str(files.get("submission", "arid_pred.csv", str)),
        details_file=str(files.get("details", "vote_details.csv", str)),
        output_probability=output_probability,
        class_names=_class_names(r, num_classes),
    )


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the per-class threshold search."""

    source: str
    ground_truth: str
    skip_rows: int
    grid: tuple[float, float, int]
    criterion: str
    min_precision: float
    missing_threshold: float
    output: str
    table: str | None = None
    list_csv: str | None = None
    printout_classes: tuple[int, ...] = (10,)


CRITERIA = ("f1", "original", "min_precision")


def load_search_config(path: str | os.PathLike) -> SearchConfig:
    """Reads ``configs/pseudo/search.yaml``."""
    source = str(path)
    r = _Reader(load_yaml(path), source)
    grid = r.sub("grid")
    num = int(grid.get("num", kind=int))
    if num < 1:
        raise grid.error("num", f"must be >= 1, got {num}")
    criterion = str(r.get("criterion", "f1", str))
    if criterion not in CRITERIA:
        raise r.error("criterion", f"must be one of {CRITERIA}, got {criterion!r}")
    skip = int(r.get("skip_rows", 0, int))
    if skip < 0:
        raise r.error("skip_rows", f"must be >= 0, got {skip}")
    return SearchConfig(
        source=source,
        ground_truth=str(r.get("ground_truth", kind=str)),
        skip_rows=skip,
        grid=(grid.number("start"), grid.number("stop"), num),
        criterion=criterion,
        min_precision=r.number("min_precision", 0.9),
        missing_threshold=r.number("missing_threshold", 1.0),
        output=str(r.get("output", kind=str)),
        table=r.get("table", None, str),
        list_csv=r.get("list_csv", None, str),
        printout_classes=tuple(int(c) for c in r.get("printout_classes", [10], list)),
    )
