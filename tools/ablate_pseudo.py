#!/usr/bin/env python
"""Ablations of one pseudo-label stage, paired on the same seeds, videos and starting weights.

    python tools/ablate_pseudo.py --workdir benchmark_work [--variants configs/benchmark/ablations.yaml]
        [--names base low_lr ...] [--stage 1]

For every finished seed of a benchmark work folder (``tools/benchmark_method.py``), every variant re-runs
pseudo-label stage ``--stage`` through the project's entry points, starting from that seed's weights of the
stage before (``exp_adapt_bn`` for stage 1) and, unless the variant changes how labels are made, that seed's
pseudo-label CSV of the stage; then tests the dark test videos (1 view x 1 crop, gamma). A variant (a mapping
in ``--variants``) may set:

  train:      KEY: VALUE overrides of the stage's training runs (on top of pseudo_stage.yaml)
  lr_scale:   a factor on each model's SOLVER.BASE_LR, WARMUP_START_LR and COSINE_END_LR
  pseudo:     changes to the stage's fusion config (the recipe's pseudo.yaml as the seed ran it), merged key
              by key: fusion weights, selection, ...
  label_models: the models whose PKLs are fused into the labels (default: every model)

Writes ``ablations.json`` and ``ablations.md`` into the work folder: per variant the ensemble's and each
model's top-1 (mean and interval over seeds and videos), the paired delta against the stage's starting point
(``adapt_bn`` for stage 1) and against the ``base`` variant, and the labels' rows / precision / recall. A
variant's predictions are kept in ``seed_<s>/ablations/<name>/result_stage<k>.json`` and reused while its
settings (the variant, the stage recipe, the seed's weights) are unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .`, too

from nightcrawler.method.pipeline import ENSEMBLE, SeedRun, member_predictions, pseudo_label_quality  # noqa: E402
from nightcrawler.method.plan import MethodPlan  # noqa: E402
from nightcrawler.method.runner import Progress, Runner, StepFailed  # noqa: E402
from nightcrawler.method.stats import mcnemar_exact, paired_delta_interval, top1_interval  # noqa: E402
from nightcrawler.pseudo.config import merge_mappings  # noqa: E402
from nightcrawler.utils.cli import run_cli  # noqa: E402
from nightcrawler.utils.io import atomic_write_text  # noqa: E402

DEFAULT_VARIANTS = REPO / "configs" / "benchmark" / "ablations.yaml"
VARIANT_KEYS = {"doc", "train", "lr_scale", "pseudo", "label_models"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a benchmark work folder with finished seeds")
    p.add_argument("--variants", default=str(DEFAULT_VARIANTS), help="variants YAML")
    p.add_argument("--names", nargs="+", default=None, help="variants to run (default: all; base always)")
    p.add_argument("--stage", type=int, default=1, help="the stage to ablate (default 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: every finished seed)")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


class Ablation:
    """The variants of one stage on one finished seed, run through that seed's :class:`SeedRun`."""

    def __init__(self, work: Path, seed_dir: Path, plan: MethodPlan, stage: int, run: Runner):
        self.work, self.dir, self.plan, self.stage, self.run = work, seed_dir, plan, stage, run
        self.record = json.loads((seed_dir / "record.json").read_text())
        self.seed = self.record["seed"]
        self.seed_run = SeedRun(plan, self.seed, seed_dir, run, pretrained={})
        self.seed_run.load_data()
        self.prev = "exp_adapt_bn" if stage == 1 else f"exp_pseudo_stage{stage - 1}"
        self.data = seed_dir / "data"

    def labels(self, name: str, variant: dict) -> Path:
        """The stage's pseudo-label CSV: the benchmark's own, or one made with the variant's label settings."""
        if "pseudo" not in variant and "label_models" not in variant:
            return self.data / "pseudo" / f"stage{self.stage}.csv"
        last = self.stage == self.plan.stages
        cfg = yaml.safe_load(
            (self.dir / "configs" / ("pseudo_last.yaml" if last else "pseudo.yaml")).read_text()
        )
        cfg = merge_mappings(cfg, variant.get("pseudo", {}))
        roles = self.seed_run.roles
        label_models = variant.get("label_models", list(self.plan.models))
        if "label_models" in variant:
            cfg["fusion"]["weights"] = {roles[m]: round(1.0 / len(label_models), 6) for m in label_models}
            cfg["inputs"]["models"] = {roles[m]: cfg["inputs"]["models"][roles[m]] for m in label_models}
        out_dir = self.dir / "ablations" / name
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "pseudo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        csv = self.data / "pseudo" / f"ablation_{name}_stage{self.stage}.csv"
        self.seed_run.make_labels(
            self.stage, out_dir / "pseudo.yaml", csv, self.prev, f"{name}: pseudo labels", label_models
        )
        return csv

    def settings(self, variant: dict) -> dict:
        """Everything that determines a variant's result on this seed (its cached result is reused when equal)."""
        stage_opts = yaml.safe_load((self.plan.recipe / "pseudo_stage.yaml").read_text()) or {}
        # the seed's own weights are the record's plan_hash; the plan and pre-training files act only through them,
        # the original recipe's not at all
        skip = {"ablations.yaml", "plan.yaml", "pretrain.yaml", "original_recipe.yaml"}
        recipe = {
            f.name: f.read_text() for f in sorted(self.plan.recipe.glob("*.yaml")) if f.name not in skip
        }
        return {
            "variant": variant,
            "stage": self.stage,
            "stage_opts": stage_opts,
            "recipe": recipe,
            "plan_hash": self.record.get("plan_hash"),
        }

    def __call__(self, name: str, variant: dict) -> dict:
        cached = self.dir / "ablations" / name / f"result_stage{self.stage}.json"
        settings = self.settings(variant)
        if cached.is_file():
            old = json.loads(cached.read_text())
            if old.get("settings") == settings:
                print(f"[ablate] seed {self.seed} {name}: reusing {cached}", flush=True)
                return old["result"]
        result = self.compute(name, variant)
        atomic_write_text(cached, json.dumps({"settings": settings, "result": result}) + "\n")
        return result

    def compute(self, name: str, variant: dict) -> dict:
        csv = self.labels(name, variant)
        tests = {
            "TEST.DATA_SELECT": "test",
            "TEST.NUM_ENSEMBLE_VIEWS": 1,
            "TEST.NUM_SPATIAL_CROPS": 1,
            "TEST.EXTRA_SETTINGS": "[]",
            "TEST.ALSO_SPLITS": "[]",
        }
        paths = {}
        for m in self.plan.models:
            out = self.dir / "ablations" / name / m
            extra = dict(variant.get("train", {}))
            if "lr_scale" in variant:
                solver, scale = self.seed_run.cfgs[m].SOLVER, float(variant["lr_scale"])
                for key in ("BASE_LR", "WARMUP_START_LR", "COSINE_END_LR"):
                    extra[f"SOLVER.{key}"] = getattr(solver, key) * scale
            opts = self.seed_run.stage_options(m, csv, self.prev, out, tests, extra)
            self.seed_run.run_net(m, f"{name}: stage-{self.stage} training of {m}", 1.0, **opts)
            paths[m] = out / self.seed_run.pkl("test")
        preds = member_predictions(paths, self.record["test_names"])
        quality = pseudo_label_quality(csv, self.seed_run.unlabel_labels, self.seed_run.num_classes)
        return {"preds": preds, "labels_quality": quality}


def summarise(results: dict, records: dict, start_step: str, models: list[str]) -> dict:
    out = {}
    seeds = sorted(records)

    def runs(name, member=ENSEMBLE):
        return [
            np.asarray(results[name][s]["preds"][member]) == np.asarray(records[s]["test_labels"])
            for s in seeds
        ]

    start = [
        np.asarray(records[s]["steps"][start_step][ENSEMBLE]) == np.asarray(records[s]["test_labels"])
        for s in seeds
    ]
    for name in results:
        r = runs(name)
        ci = top1_interval(r)
        d0 = paired_delta_interval(start, r)
        entry = {
            "top1_mean": ci.mean,
            "top1_ci95": ci.as_list(),
            "top1_per_seed": [float(x.mean()) for x in r],
            "per_model": {m: top1_interval(runs(name, m)).mean for m in models},
            f"delta_vs_{start_step}": {
                "mean": d0.mean,
                "ci95": d0.as_list(),
                "mcnemar_p": mcnemar_exact(start, r)[0],
            },
            "labels": {
                k: float(np.mean([results[name][s]["labels_quality"][k] for s in seeds]))
                for k in ("rows", "precision", "recall")
            },
        }
        if name != "base" and "base" in results:
            b = runs("base")
            d = paired_delta_interval(b, r)
            entry["delta_vs_base"] = {
                "mean": d.mean,
                "ci95": d.as_list(),
                "mcnemar_p": mcnemar_exact(b, r)[0],
            }
        out[name] = entry
    start_models = {
        m: top1_interval(
            [
                np.asarray(records[s]["steps"][start_step][m]) == np.asarray(records[s]["test_labels"])
                for s in seeds
            ]
        ).mean
        for m in models
    }
    return {
        "seeds": seeds,
        "start_step": start_step,
        "start_top1": top1_interval(start).mean,
        "start_per_model": start_models,
        "variants": out,
    }


def markdown(summary: dict, docs: dict) -> str:
    start = summary["start_step"]
    models = list(summary["start_per_model"])
    lines = [
        f"Seeds {', '.join(map(str, summary['seeds']))}; start `{start}`: {100 * summary['start_top1']:.1f} % "
        + "("
        + ", ".join(f"{m} {100 * v:.1f}" for m, v in summary["start_per_model"].items())
        + ")",
        "",
        "| variant | what | top-1 [95 % CI] | "
        + " | ".join(models)
        + f" | vs `{start}` (p) | vs base (p) | labels rows / precision |",
        "|---|---|---:|" + "---:|" * len(models) + "---:|---:|---:|",
    ]
    for name, v in summary["variants"].items():
        d0 = v[f"delta_vs_{start}"]
        db = v.get("delta_vs_base")
        lines.append(
            f"| `{name}` | {docs.get(name, '')} | {100 * v['top1_mean']:.1f} [{100 * v['top1_ci95'][0]:.1f}, "
            f"{100 * v['top1_ci95'][1]:.1f}] | "
            + " | ".join(f"{100 * v['per_model'][m]:.1f}" for m in models)
            + f" | {100 * d0['mean']:+.1f} ({d0['mcnemar_p']:.2g}) | "
            + (
                f"{100 * db['mean']:+.1f} [{100 * db['ci95'][0]:+.1f}, {100 * db['ci95'][1]:+.1f}] ({db['mcnemar_p']:.2g})"
                if db
                else ""
            )
            + f" | {v['labels']['rows']:.0f} / {100 * v['labels']['precision']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    work = Path(args.workdir).resolve()
    bench = json.loads((work / "benchmark.json").read_text()) if (work / "benchmark.json").is_file() else None
    variants = yaml.safe_load(Path(args.variants).read_text())
    for name, v in variants.items():
        bad = sorted(set(v or {}) - VARIANT_KEYS)
        if bad:
            raise SystemExit(
                f"{args.variants}: variant {name!r} has unknown keys {bad}; expected {sorted(VARIANT_KEYS)}"
            )
    names = ["base"] + [n for n in (args.names or variants) if n != "base"]
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"{args.variants}: no variants {unknown}; it has {sorted(variants)}")
    seed_dirs = sorted(p.parent for p in work.glob("seed_*/record.json"))
    if args.seeds is not None:
        seed_dirs = [d for d in seed_dirs if int(d.name.split("_")[1]) in args.seeds]
    if not seed_dirs:
        raise SystemExit(
            f"{work}: no finished seed (seed_*/record.json); run tools/benchmark_method.py first"
        )
    from nightcrawler.method.plan import load_plan

    plan_file = bench["plan"]["plan_file"] if bench else str(REPO / "configs" / "benchmark" / "plan.yaml")
    plan = load_plan(plan_file)
    if bench:
        plan = load_plan(
            plan_file,
            stages=bench["plan"]["stages"],
            epochs=bench["plan"]["epochs"],
            pseudo_epochs=bench["plan"]["pseudo_epochs"],
            models=bench["plan"]["models"],
        )
    progress = Progress(len(seed_dirs) * len(names) * (len(plan.models) + 0.2), prefix="[ablate]")
    run = Runner(work / "ablations.log", verbose=args.verbose, progress=progress)
    results: dict[str, dict[int, dict]] = {n: {} for n in names}
    records = {}
    t0 = time.time()
    try:
        for d in seed_dirs:
            ab = Ablation(work, d, plan, args.stage, run)
            records[ab.seed] = ab.record
            for name in names:
                results[name][ab.seed] = ab(name, variants[name] or {})
    except StepFailed as exc:
        print(f"[ablate] {exc}", file=sys.stderr)
        return exc.exit_code if exc.exit_code > 0 else 1  # a step's user-error code passes through
    start = "adapt_bn" if args.stage == 1 else f"pseudo_stage{args.stage - 1}"
    summary = summarise(results, records, start, list(plan.models))
    summary["stage"] = args.stage
    summary["seconds"] = time.time() - t0
    summary["variant_settings"] = {n: variants[n] for n in names}
    docs = {n: (variants[n] or {}).get("doc", "") for n in names}
    atomic_write_text(work / "ablations.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(work / "ablations.md", markdown(summary, docs))
    print(markdown(summary, docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
