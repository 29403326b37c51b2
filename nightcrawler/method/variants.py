"""Beyond the original: enhancement and adaptation variants run on the seeds of a finished method benchmark.

Each variant (``configs/benchmark/variants.yaml``) replaces one part of the recipe and is scored on the same dark
test videos as the original's choice, so every comparison is paired:

* level ``adapt_bn``: the supervised weights with BatchNorm statistics re-estimated on the unlabelled dark videos
  with the variant's enhancement (``tools/adapt_bn.py``, ``ENHANCE.BN``; plus the variant's overrides, e.g. TENT),
  then the dark test with that enhancement (``ENHANCE.TEST``). Reference: the variant ``gamma`` (0.25).
  ``learned_curve`` first trains its curve estimator on the seed's unlabelled dark videos.
* level ``pseudo_stage1``: the stage-1 pseudo-label training on the benchmark's own stage-1 labels, with the
  variant's overrides (``teacher: true``: the adapt-BN weights as the distillation teacher). Reference: the
  benchmark's ``pseudo_stage1`` step.

A seed's variant record (``seed_<s>/variants/record.json``) keeps every test video's prediction per variant and
model, and the seconds of each step, from which the table's intervals, paired deltas and costs are computed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from nightcrawler.config.loading import ConfigError
from nightcrawler.method.pipeline import ENSEMBLE, UNITS_ADAPT, SeedRun, member_predictions
from nightcrawler.method.stats import mcnemar_exact, paired_delta_interval, top1_interval
from nightcrawler.utils.io import atomic_write_text

LEVELS = {"adapt_bn": "gamma", "pseudo_stage1": "pseudo_stage1"}  # level -> its reference


@dataclass(frozen=True)
class Variant:
    """One entry of ``variants.yaml``."""

    name: str
    doc: str
    level: str
    enhance: str = ""
    opts: dict = field(default_factory=dict)
    enhancer_args: tuple[str, ...] = ()
    teacher: bool = False
    cost_reference: str = ""  # the variant whose seconds, measured in the same run, its cost is counted from

    @property
    def reference(self) -> str:
        return LEVELS[self.level]

    @property
    def settings(self) -> dict:
        """What decides the variant's runs (a finished run is reused only under the same settings)."""
        return {
            "level": self.level,
            "enhance": self.enhance,
            "opts": self.opts,
            "enhancer_args": list(self.enhancer_args),
            "teacher": self.teacher,
        }

    @property
    def cost_from(self) -> str:
        return self.cost_reference or self.reference


def load_variants(path: str | Path, names: list[str] | None = None) -> list[Variant]:
    """The variants of ``path`` (all, or ``names`` in that order; ``all`` means every one)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"{path}: expected a mapping of variant name -> settings (doc, level, enhance, opts)"
        )
    known = list(data)
    chosen = known if not names or names == ["all"] else names
    unknown = [n for n in chosen if n not in data]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)} in {path}; known: {', '.join(known)}")
    out = []
    for name in chosen:
        entry = dict(data[name])
        level = entry.get("level", "adapt_bn")
        if level not in LEVELS:
            raise ConfigError(
                f"{path}: variant {name}: level must be one of {', '.join(LEVELS)}, got {level!r}"
            )
        if level == "adapt_bn" and not entry.get("enhance"):
            raise ConfigError(f"{path}: variant {name} (level adapt_bn) needs an 'enhance' spec")
        out.append(
            Variant(
                name=name,
                doc=str(entry.get("doc", "")),
                level=level,
                enhance=str(entry.get("enhance", "")),
                opts=dict(entry.get("opts") or {}),
                enhancer_args=tuple(str(a) for a in entry.get("enhancer_args") or ()),
                teacher=bool(entry.get("teacher", False)),
                cost_reference=str(entry.get("cost_reference", "")),
            )
        )
    if any(v.level == "adapt_bn" for v in out) and "gamma" not in [v.name for v in out]:
        out.insert(0, load_variants(path, ["gamma"])[0])  # the adapt_bn level's reference runs too
    return out


# progress units of each kind of step (about its seconds on the benchmark's 2-core machine)
UNITS_TEST, UNITS_STAGE1, UNITS_CURVE = 7.0, 60.0, 60.0


def variant_units(variant: Variant, models: int) -> float:
    """Progress units of one variant on one seed (the runner's progress bar and time estimate)."""
    if variant.level != "adapt_bn":
        return models * UNITS_STAGE1
    curve = UNITS_CURVE if variant.enhance.split(":")[0] == "learned_curve" else 0.0
    return curve + models * (UNITS_ADAPT + UNITS_TEST)


class VariantRun:
    """The variants on one finished seed (``seed``: its :class:`SeedRun`, data and experiment folders present)."""

    def __init__(self, seed: SeedRun, variants: list[Variant]):
        self.seed = seed
        self.variants = variants
        self.folder = seed.work / "variants"
        seed.load_data()

    def _what(self, variant: Variant, text: str) -> str:
        return f"variant {variant.name}: {text}"

    def enhancement_spec(self, variant: Variant) -> str:
        """The variant's enhancement spec; ``learned_curve`` trains its estimator first (once per seed)."""
        if variant.enhance.split(":")[0] != "learned_curve" or "checkpoint=" in variant.enhance:
            return variant.enhance
        curve = self.folder / variant.name / "curve.pyth"
        if not curve.is_file():
            s = self.seed
            self.seed.run(
                "tools/train_enhancer.py",
                "--cfg",
                s.plan.recipe / f"{s.plan.models[0]}.yaml",
                "--split",
                "train_unlabel",
                "--out",
                curve,
                "--seed",
                s.seed,
                "--no-progress",
                *variant.enhancer_args,
                *_overrides(s.common()),
                what=f"seed {s.seed}: {self._what(variant, 'curve estimator training')}",
                units=UNITS_CURVE,
            )
        sep = "," if ":" in variant.enhance else ":"
        return f"{variant.enhance}{sep}checkpoint={curve}"

    def run_adapt_bn(self, variant: Variant) -> dict[str, Path]:
        s = self.seed
        spec = self.enhancement_spec(variant)
        pkls = {}
        for m in s.plan.models:
            out = self.folder / variant.name / m
            enhance = {"ENHANCE.BN": spec, "ENHANCE.TEST": spec}
            s.adapt_bn(
                m,
                s.work / "exp_adapt_bn" / m / "best.pyth",
                out,
                self._what(variant, f"{m}: BN statistics"),
                **enhance,
                **variant.opts,  # e.g. TENT: applied once, here; the adapted weights are then only tested
            )
            tests = {"TRAIN.ENABLE": False, "TEST.DATA_SELECT": "test", "OUTPUT_DIR": str(out)}
            s.run_net(m, self._what(variant, f"{m}: dark test"), UNITS_TEST, **enhance, **tests)
            pkls[m] = out / s.pkl("test")
        return pkls

    def run_stage1(self, variant: Variant) -> dict[str, Path]:
        s = self.seed
        labels = s.data / "pseudo" / "stage1.csv"
        if not labels.is_file():
            raise FileNotFoundError(
                f"{labels}: the benchmark's stage-1 pseudo labels (run the benchmark first)"
            )
        pkls = {}
        for m in s.plan.models:
            out = self.folder / variant.name / m
            extra = dict(variant.opts)
            if variant.teacher:
                extra["DISTILL.TEACHER_CHECKPOINT"] = str(s.work / "exp_adapt_bn" / m / "best.pyth")
            tests = {"TEST.DATA_SELECT": "test"}
            opts = s.stage_options(m, labels, "exp_adapt_bn", out, tests, extra)
            s.run_net(m, self._what(variant, f"{m}: stage-1 training and dark test"), UNITS_STAGE1, **opts)
            pkls[m] = out / s.pkl("test")
        return pkls

    def __call__(self, fresh: bool = False) -> dict:
        """Runs the variants this seed's ``variants/record.json`` lacks (or holds under other settings, or all with
        ``fresh``), keeping the others; the record is rewritten after each variant, so a stopped run loses none."""
        s = self.seed
        path = self.folder / "record.json"
        record: dict = {
            "seed": s.seed,
            "test_names": s.test_names,
            "variants": {},
            "seconds": {},
            "settings": {},
        }
        if path.is_file() and not fresh:
            old = json.loads(path.read_text())
            if old.get("test_names") == s.test_names:
                record.update({k: old.get(k, {}) for k in ("variants", "seconds", "settings")})
        for variant in self.variants:
            if (
                record["settings"].get(variant.name) == variant.settings
                and variant.name in record["variants"]
            ):
                print(f"[benchmark] seed {s.seed}: reusing variant {variant.name}", flush=True)
                continue
            shutil.rmtree(self.folder / variant.name, ignore_errors=True)  # no stale checkpoint is resumed
            if s.run.progress is not None:
                s.run.progress.add(variant_units(variant, len(s.plan.models)))
            before = dict(s.run.seconds)
            pkls = self.run_adapt_bn(variant) if variant.level == "adapt_bn" else self.run_stage1(variant)
            record["variants"][variant.name] = member_predictions(pkls, s.test_names)
            record["seconds"][variant.name] = {
                k.split(": ", 1)[-1]: v for k, v in s.run.seconds.items() if k not in before or before[k] != v
            }
            record["settings"][variant.name] = variant.settings
            atomic_write_text(path, json.dumps(record) + "\n")
        return record


def _overrides(mapping: dict) -> list[str]:
    from nightcrawler.method.runner import overrides

    return overrides(mapping)


# ------------------------------------------------------------------------------------------------ report
def _correct(preds: list[int], labels: list[int]) -> np.ndarray:
    return np.asarray(preds) == np.asarray(labels)


def _test_seconds(seconds: dict, level: str) -> float:
    """Seconds of a variant's test-related steps summed over the models (its BN statistics and test runs)."""
    keys = ("BN statistics", "dark test") if level == "adapt_bn" else ("stage-1 training",)
    return sum(v for k, v in seconds.items() if any(w in k for w in keys))


def build_variant_table(
    records: list[dict], variant_records: list[dict], variants: list[Variant], train_epochs: int | None = None
) -> dict:
    """Per variant: ensemble and per-model top-1 (mean, 95 % CI), the paired delta against its reference (the
    original's choice at the same level), and its cost against the variant it is costed from, measured in the same
    run: extra seconds per test video (adapt-BN level: BN statistics and test) or per training epoch
    (``train_epochs`` epochs of stage-1 training)."""
    labels = [r["test_labels"] for r in records]
    models = records[0]["models"]
    rows = []

    def runs(name: str, member: str) -> list[np.ndarray]:
        if name == "pseudo_stage1":
            return [_correct(r["steps"]["pseudo_stage1"][member], y) for r, y in zip(records, labels)]
        return [_correct(v["variants"][name][member], y) for v, y in zip(variant_records, labels)]

    videos = float(np.mean([len(y) for y in labels]))
    for variant in variants:
        ens = top1_interval(runs(variant.name, ENSEMBLE))
        row = {
            "name": variant.name,
            "doc": variant.doc,
            "level": variant.level,
            "reference": variant.reference,
            "top1_mean": ens.mean,
            "top1_ci95": ens.as_list(),
            "per_model": {m: top1_interval(runs(variant.name, m)).__dict__ for m in models},
        }
        if variant.name != variant.reference:
            before, after = runs(variant.reference, ENSEMBLE), runs(variant.name, ENSEMBLE)
            d = paired_delta_interval(before, after)
            p, lost, gained = mcnemar_exact(before, after)
            row["delta"] = {
                "mean": d.mean,
                "ci95": d.as_list(),
                "mcnemar_p": p,
                "lost": lost,
                "gained": gained,
            }
        secs = [_test_seconds(v["seconds"][variant.name], variant.level) for v in variant_records]
        row["seconds_per_seed"] = float(np.mean(secs))
        extra = [
            sum(x for k, x in v["seconds"][variant.name].items() if "curve estimator" in k)
            for v in variant_records
        ]
        row["enhancer_training_seconds"] = float(np.mean(extra))
        rows.append(row)
    by_name = {r["name"]: r for r in rows}
    for variant, row in zip(variants, rows):  # cost against a variant measured in the same run
        ref = by_name.get(variant.cost_from)
        if ref is None or row is ref:
            continue
        row["cost_reference"] = ref["name"]
        if (
            variant.cost_reference and variant.cost_reference != variant.reference
        ):  # its own baseline, paired too
            before, after = runs(ref["name"], ENSEMBLE), runs(variant.name, ENSEMBLE)
            d, (p, lost, gained) = paired_delta_interval(before, after), mcnemar_exact(before, after)
            row["delta_vs_cost_reference"] = {"mean": d.mean, "ci95": d.as_list(), "mcnemar_p": p}
            row["delta_vs_cost_reference"].update(lost=lost, gained=gained)
        extra = row["seconds_per_seed"] - ref["seconds_per_seed"]
        if variant.level == "adapt_bn":
            row["extra_seconds_per_video"] = extra / videos
        elif train_epochs:
            row["extra_seconds_per_epoch"] = extra / train_epochs
    return {
        "seeds": [r["seed"] for r in records],
        "test_videos_per_seed": [len(y) for y in labels],
        "models": models,
        "variants": rows,
    }


def variant_markdown(table: dict) -> str:
    """The table for docs/REPRODUCING.md."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = [
        f"Seeds {table['seeds']}, {table['test_videos_per_seed'][0]} dark test videos per seed, ensemble of "
        f"{', '.join(table['models'])}; top-1 mean over seeds [95 % CI]; delta paired on the same videos.",
        "",
        "| variant | level | top-1 % [95 % CI] | per model | delta vs reference, points [95 % CI] (McNemar p) | "
        "extra cost (same run) | notes |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for r in table["variants"]:
        per_model = ", ".join(f"{m} {pct(v['mean'])}" for m, v in r["per_model"].items())
        d = r.get("delta")
        delta = (
            f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] (p={d['mcnemar_p']:.2g})"
            if d
            else f"reference of {r['level']}"
        )
        if "extra_seconds_per_video" in r:
            cost = f"{r['extra_seconds_per_video']:+.3f} s / test video"
        elif "extra_seconds_per_epoch" in r:
            cost = f"{r['extra_seconds_per_epoch']:+.1f} s / epoch"
        else:
            cost = ""
        if cost and r["cost_reference"] != r["reference"]:
            cost += f" vs `{r['cost_reference']}`"
        notes = r["doc"]
        own = r.get("delta_vs_cost_reference")
        if own:
            notes += (
                f"; vs `{r['cost_reference']}`: {100 * own['mean']:+.1f} [{100 * own['ci95'][0]:+.1f}, "
                f"{100 * own['ci95'][1]:+.1f}] (p={own['mcnemar_p']:.2g})"
            )
        if r["enhancer_training_seconds"]:
            notes += f"; estimator training {r['enhancer_training_seconds']:.0f} s per seed"
        lines.append(
            f"| `{r['name']}` | {r['level']} | **{pct(r['top1_mean'])}** [{pct(r['top1_ci95'][0])}, "
            f"{pct(r['top1_ci95'][1])}] | {per_model} | {delta} | "
            f"{cost} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def plot_variants(table: dict, path: Path) -> None:
    """Top-1 with 95 % intervals per variant, grouped by level, the reference marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["variants"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        lo, hi = r["top1_ci95"]
        ref = r["name"] == r["reference"]
        ax.errorbar(
            100 * r["top1_mean"], i, xerr=[[100 * (r["top1_mean"] - lo)], [100 * (hi - r["top1_mean"])]],
            fmt="s" if ref else "o", color="black" if ref else "tab:blue", capsize=3,
        )  # fmt: skip
    ax.set_yticks(range(len(rows)), [f"{r['name']} ({r['level']})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("dark test top-1 (%), mean over seeds, 95 % CI")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_variant_table(table: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "variants.json", json.dumps(table, indent=1) + "\n")
    atomic_write_text(out_dir / "variants.md", variant_markdown(table))
    plot_variants(table, out_dir / "variants.png")
