#!/usr/bin/env python
"""The whole method, end to end, on one generated dark-video set with tiny models, in one command.

One seed of the method benchmark (``tools/benchmark_method.py``) at a smaller size, with the same recipe
(``configs/benchmark/``): every step goes through the entry points a researcher uses on real data
(``tools/make_synthetic.py``, ``tools/run_net.py``, ``tools/adapt_bn.py``,
``gen_pseudo_tools/generate_pseudo_label_stage{k}.py``, ``test_ensemble_vote.py``). The tiny models start from
the source pre-trained weights (trained on first use and cached in ``--pretrain-cache``; the benchmark's cache
is used when it has them; ``--quick`` trains from scratch unless a cache has them). Writes ``summary.json``,
``summary.md`` and ``summary.png`` (the benchmark's format, one seed) into the work folder.

Steps scored (dark-test top-1 of each model and of their averaged probabilities):
  source_only   supervised weights with BN statistics of the normal-light training clips, no gamma
  gamma_tta     the same weights, gamma-corrected (0.25) test frames
  adapt_bn      BN statistics re-estimated on the unlabelled dark videos, gamma TTA
  pseudo_stageK each pseudo-label stage's models, gamma TTA (the last one with 3 views x 3 crops)
  final_vote    the vote's submission CSV
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .`, too

from nightcrawler.method.pipeline import SeedRun, planned_units  # noqa: E402
from nightcrawler.method.plan import load_plan  # noqa: E402
from nightcrawler.method.pretrain import CORPUS_UNITS, cache_key, ensure_pretrained, pretrain_units  # noqa: E402
from nightcrawler.method.report import benchmark_markdown, build_benchmark, plot_benchmark  # noqa: E402
from nightcrawler.method.runner import Progress, Runner, StepFailed  # noqa: E402
from nightcrawler.utils.cli import run_cli  # noqa: E402
from nightcrawler.utils.io import atomic_write_text  # noqa: E402

PLANS = {"full": REPO / "configs" / "demo" / "plan.yaml", "quick": REPO / "configs" / "demo" / "quick.yaml"}
BENCHMARK_CACHE = REPO / "benchmark_work" / "pretrain"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="demo_work", help="work folder (data, experiments, summary)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data set and of every run")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (configs/demo/quick.yaml)")
    p.add_argument("--stages", type=int, default=None, help="pseudo-label stages (default: the plan's)")
    p.add_argument("--epochs", type=int, default=None, help="supervised epochs (default: the recipe's)")
    p.add_argument(
        "--models", nargs="+", default=None, help="model configs of configs/benchmark/ (default: the plan's)"
    )
    p.add_argument(
        "--pretrain-cache",
        default=None,
        help="source pre-training cache (default: benchmark_work/pretrain where it has the weights, "
        "else WORKDIR/pretrain, kept across runs)",
    )
    p.add_argument("--no-pretrain", action="store_true", help="train the tiny models from scratch")
    p.add_argument("--verbose", action="store_true", help="show every step's output (else: WORKDIR/demo.log)")
    return p.parse_args(argv)


def _cache_has(plan, cache: Path) -> bool:
    return all((cache / f"{m}-{cache_key(plan, m)}" / "zoo.pth").is_file() for m in plan.models)


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.models and len(set(args.models)) != len(args.models):
        raise SystemExit("--models: each model once")
    plan = load_plan(
        PLANS["quick" if args.quick else "full"], stages=args.stages, epochs=args.epochs, models=args.models
    )
    work = Path(args.workdir).resolve()
    own_cache = work / "pretrain"
    if args.pretrain_cache:
        cache = Path(args.pretrain_cache).resolve()
    else:
        cache = BENCHMARK_CACHE if _cache_has(plan, BENCHMARK_CACHE) else own_cache
    if args.no_pretrain or (args.quick and not _cache_has(plan, cache)):
        plan = replace(plan, pretrain=replace(plan.pretrain, enable=False))
    # a fresh work folder, except the pre-training cache it may hold
    work.mkdir(parents=True, exist_ok=True)
    for child in work.iterdir():
        if child != own_cache:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    units = planned_units(plan) + (
        (CORPUS_UNITS + pretrain_units(plan) * len(plan.models)) if plan.pretrain.enable else 0
    )
    run = Runner(work / "demo.log", verbose=args.verbose, progress=Progress(units, prefix="[demo]"))
    t0 = time.time()
    try:
        pretrained = ensure_pretrained(plan, cache, run) if plan.pretrain.enable else {}
        if not plan.pretrain.enable:
            print("[demo] tiny models trained from scratch (no source pre-training)", flush=True)
        record = SeedRun(plan, args.seed, work / "seed", run, pretrained)()
    except StepFailed as exc:
        print(f"[demo] {exc}", file=sys.stderr)
        return exc.exit_code if exc.exit_code > 0 else 1  # a step's user-error code passes through
    summary = build_benchmark(
        [record], {**plan.to_dict(), "pretrained": bool(pretrained)}, {"total": time.time() - t0}
    )
    summary["submission"] = record["submission"]
    atomic_write_text(work / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(work / "summary.md", benchmark_markdown(summary))
    plot_benchmark(summary, work / "summary.png")
    print()
    print(benchmark_markdown(summary))
    print(f"[demo] summary: {work / 'summary.json'}, {work / 'summary.md'}, {work / 'summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
