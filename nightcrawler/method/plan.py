"""The plan of a method run (benchmark or demo): data set size, models, schedule, source pre-training.

A plan is a YAML file (``configs/benchmark/plan.yaml``, ``configs/demo/plan.yaml``) next to the recipe's
model configs; every model setting lives in those configs, the plan only says how big the run is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

from nightcrawler.data.synthetic import MOTIONS

SOURCES = ("labeled", "dry", "dark", "arid", "test")
ORIGINAL_RECIPE = "original_recipe.yaml"  # the original recipe's settings, beside the model configs


@dataclass(frozen=True)
class DataPlan:
    """The synthetic target set of one seed (``tools/make_synthetic.py``)."""

    num_classes: int = 11
    width: int = 128
    height: int = 96
    frames: int = 32
    class_cue: float = 0.0  # an ablation knob: 1.0 codes the class in the object's appearance
    per_class: dict = field(
        default_factory=lambda: {"labeled": 16, "dry": 6, "dark": 28, "arid": 12, "test": 28}
    )

    def make_args(self, out: Path, seed: int) -> list[str]:
        counts = [f"{s}={int(self.per_class[s])}" for s in SOURCES if s in self.per_class]
        return [
            "--out",
            out,
            "--seed",
            seed,
            "--num-classes",
            self.num_classes,
            "--frames",
            self.frames,
            "--width",
            self.width,
            "--height",
            self.height,
            "--class-cue",
            self.class_cue,
            "--videos-per-class",
            max(1, int(self.per_class.get("test", 4))),
            "--per-source",
            *counts,
        ]


@dataclass(frozen=True)
class PretrainPlan:
    """The source pre-training corpus (normal light, more motions than the target classes) and its schedule."""

    enable: bool = True
    motions: tuple[str, ...] = MOTIONS
    per_class: int = 24  # labelled videos per motion
    val_per_class: int = 4  # held-out videos per motion (the run's val_dry)
    seed: int = 5000  # one corpus for every target seed (outside the tuning and confirmatory seeds)
    class_cue: float = 0.0  # strength of the corpus's own class-specific appearance (0: motion only)
    epochs: int | None = None  # None: the pre-training config's SOLVER.MAX_EPOCH


@dataclass(frozen=True)
class MethodPlan:
    recipe: Path  # folder with common.yaml, <model>.yaml, pseudo_stage.yaml, pretrain.yaml, pseudo.yaml ...
    models: tuple[str, ...] = ("uniformer_tiny", "sf_tiny")
    data: DataPlan = DataPlan()
    stages: int = 3
    epochs: int | None = None  # supervised epochs (None: the model config's SOLVER.MAX_EPOCH)
    pseudo_epochs: int | None = None  # per pseudo-label stage (None: pseudo_stage.yaml's)
    last_stage_tta: tuple[int, int] = (3, 3)  # views x crops of the last stage's test (and its 1x1)
    pretrain: PretrainPlan = PretrainPlan()
    # also run the original recipe (ORIGINAL_RECIPE in the recipe folder) from the same supervised weights
    original_recipe: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["recipe"] = str(self.recipe)
        return d


def load_plan(path: str | Path, **changes) -> MethodPlan:
    """Reads a plan YAML; ``changes`` (non-None values) replace its top-level fields."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    known = {
        "recipe",
        "models",
        "data",
        "stages",
        "epochs",
        "pseudo_epochs",
        "last_stage_tta",
        "pretrain",
        "original_recipe",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown plan keys {unknown}; expected some of {sorted(known)}")
    data = raw.get("data", {}) or {}
    bad = sorted(set(data) - set(DataPlan.__dataclass_fields__))
    if bad:
        raise ValueError(
            f"{path}: unknown data keys {bad}; expected some of {sorted(DataPlan.__dataclass_fields__)}"
        )
    pre = raw.get("pretrain", {}) or {}
    bad = sorted(set(pre) - set(PretrainPlan.__dataclass_fields__))
    if bad:
        raise ValueError(
            f"{path}: unknown pretrain keys {bad}; expected some of {sorted(PretrainPlan.__dataclass_fields__)}"
        )
    if "motions" in pre:
        pre["motions"] = MOTIONS if pre["motions"] == "all" else tuple(pre["motions"])
    default_counts = DataPlan().per_class
    if "per_class" in data:
        bad = sorted(set(data["per_class"]) - set(SOURCES))
        if bad:
            raise ValueError(f"{path}: data.per_class has unknown sources {bad}; expected {list(SOURCES)}")
        data["per_class"] = {**default_counts, **data["per_class"]}
    recipe = (path.parent / raw.get("recipe", ".")).resolve()
    plan = MethodPlan(
        recipe=recipe,
        models=tuple(raw.get("models", MethodPlan.models)),
        data=DataPlan(**data),
        stages=int(raw.get("stages", MethodPlan.stages)),
        epochs=raw.get("epochs"),
        pseudo_epochs=raw.get("pseudo_epochs"),
        last_stage_tta=tuple(raw.get("last_stage_tta", MethodPlan.last_stage_tta)),
        pretrain=PretrainPlan(**pre),
        original_recipe=bool(raw.get("original_recipe", MethodPlan.original_recipe)),
    )
    changes = {k: v for k, v in changes.items() if v is not None}
    if "models" in changes:
        changes["models"] = tuple(changes["models"])
    plan = replace(plan, **changes)
    for m in plan.models:
        if not (plan.recipe / f"{m}.yaml").is_file():
            raise ValueError(f"{path}: model {m!r} has no config {plan.recipe / (m + '.yaml')}")
    if plan.original_recipe and not (plan.recipe / ORIGINAL_RECIPE).is_file():
        raise ValueError(f"{path}: original_recipe is on but {plan.recipe / ORIGINAL_RECIPE} does not exist")
    if plan.stages < 1:
        raise ValueError(f"{path}: stages must be >= 1, got {plan.stages}")
    return plan
