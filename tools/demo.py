#!/usr/bin/env python
"""The whole method, end to end, on a generated dark-video set with tiny models, in one command.

Every step goes through the entry points a researcher uses on real data: ``tools/make_synthetic.py``,
``tools/run_net.py`` (training with BN adaptation, gamma / multi-view testing), ``tools/adapt_bn.py``,
``gen_pseudo_tools/generate_pseudo_label_stage{k}.py`` and ``test_ensemble_vote.py``. The demo then scores
every step on the hidden dark-test labels and writes ``summary.json``, ``summary.md`` and ``summary.png``
into the work folder.

Steps scored (dark-test top-1 of the models' averaged probabilities, and per model):
  source_only   supervised weights with BN statistics of the normal-light training clips, no gamma
  gamma_tta     the same weights, gamma-corrected (0.25) test frames
  adapt_bn      BN statistics re-estimated on the unlabelled dark videos, gamma TTA
  pseudo_stageK each pseudo-label stage's models, gamma TTA (the last one with 3 views x 3 crops)
  final_vote    the vote's submission CSV
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .`, too

from nightcrawler.pseudo.io import load_pkl, read_labelled_list, read_pseudo_csv  # noqa: E402

MODEL_CONFIGS = {"uniformer_tiny": "uniformer", "sf_tiny": "slowfast", "mvit_tiny": "mvit"}


@dataclass
class DemoPlan:
    """Sizes and schedule of one demo run."""

    videos_per_class: int
    labeled_per_class: int
    frames: int
    epochs: int
    pseudo_epochs: int
    stages: int
    models: list[str]
    seed: int
    num_classes: int = 5
    class_cue: float = 1.0
    original_bn_variant: bool = True  # also measure BN statistics of raw dark clips (the original's choice)


def make_plan(args: argparse.Namespace) -> DemoPlan:
    if args.quick:
        plan = DemoPlan(3, 6, 40, 3, 1, 1, args.models, args.seed, original_bn_variant=False)
    else:
        plan = DemoPlan(8, 16, 48, 15, 3, 2, args.models, args.seed)
    if args.stages is not None:
        plan.stages = args.stages
    if args.epochs is not None:
        plan.epochs = args.epochs
    return plan


class Runner:
    """Runs the project's entry points as subprocesses, logging each command and its output."""

    def __init__(self, work: Path, verbose: bool):
        self.work = work
        self.verbose = verbose
        self.log = work / "demo.log"

    def __call__(self, *args: str | os.PathLike, what: str) -> None:
        cmd = [sys.executable, *map(str, args)]
        t0 = time.time()
        print(f"[demo] {what} ...", flush=True)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.run(
                cmd,
                cwd=REPO,
                stdout=None if self.verbose else log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        if proc.returncode != 0:
            raise SystemExit(f"[demo] step failed ({what}); see {self.log} for its output")
        print(f"[demo]   done in {time.time() - t0:.0f} s", flush=True)


def run_net(run: Runner, cfg: str, what: str, **overrides) -> None:
    opts: list[str] = []
    for key, value in overrides.items():
        opts += [key.replace("__", "."), value if isinstance(value, str) else repr(value)]
    run(REPO / "tools" / "run_net.py", "--cfg", REPO / "configs" / "demo" / f"{cfg}.yaml", *opts, what=what)


def adapt_bn(
    run: Runner, cfg: str, checkpoint: Path, out: Path, data: Path, num_classes: int, *overrides, what: str
) -> None:
    """``tools/adapt_bn.py``: ``checkpoint`` with re-estimated BN statistics -> ``out/best.pyth``."""
    run(
        REPO / "tools" / "adapt_bn.py",
        "--cfg",
        REPO / "configs" / "demo" / f"{cfg}.yaml",
        "--checkpoint",
        checkpoint,
        "--output",
        out / "best.pyth",
        "DATA.PATH_PREFIX",
        data,
        "OUTPUT_DIR",
        out,
        "MODEL.NUM_CLASSES",
        str(num_classes),
        *map(str, overrides),
        what=what,
    )


def pkl_name(split: str, frames: int, crop: int, views: int, crops: int, suffix: str = "") -> str:
    return f"{split}x{frames}x{crop}x{views}x{crops}{suffix}.pkl"


def write_demo_configs(
    work: Path, models: list[str], pkl_total: str, test_pkls: dict[str, str], class_names: list[str]
) -> tuple[Path, Path, Path]:
    """Stage (thresholded, keep-all) and ensemble YAMLs for the chosen models (equal weights), from the
    templates in configs/demo."""
    roles = {m: MODEL_CONFIGS[m] for m in models}
    weight = round(1.0 / len(models), 6)
    pseudo = yaml.safe_load((REPO / "configs" / "demo" / "pseudo.yaml").read_text())
    ens = yaml.safe_load((REPO / "configs" / "demo" / "ensemble.yaml").read_text())
    for c in (pseudo, ens):
        c["num_classes"], c["class_names"] = len(class_names), list(class_names)
    pseudo["inputs"]["pkl_name"] = pkl_total
    pseudo["inputs"]["models"] = {roles[m]: f"exp_adapt_bn/{m}" for m in models}
    pseudo["fusion"]["weights"] = {roles[m]: weight for m in models}
    ens["models"] = {roles[m]: f"exp_final/{m}" for m in models}
    for name, file in test_pkls.items():
        ens["pkl_sets"][name] = {"default": file}
    for mode in ens["modes"]:
        mode["fusion"]["weights"] = {roles[m]: weight for m in models}
    out = work / "configs"
    out.mkdir(exist_ok=True)
    (out / "pseudo.yaml").write_text(yaml.safe_dump(pseudo, sort_keys=False))
    pseudo["selection"] = {"method": "all"}
    (out / "pseudo_last.yaml").write_text(yaml.safe_dump(pseudo, sort_keys=False))
    (out / "ensemble.yaml").write_text(yaml.safe_dump(ens, sort_keys=False))
    return out / "pseudo.yaml", out / "pseudo_last.yaml", out / "ensemble.yaml"


def accuracy_of_pkls(paths: list[Path], labels: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Top-1 of the averaged softmax over models, and each model's own top-1, on the labelled names."""
    probs, per_model = [], {}
    names = None
    for p in paths:
        out = load_pkl(p)
        order = np.argsort(np.asarray(out.names))
        n = np.asarray(out.names)[order]
        scores = out.preds[order].astype(np.float64)
        e = np.exp(scores - scores.max(1, keepdims=True))
        prob = e / e.sum(1, keepdims=True)
        if names is not None and not np.array_equal(names, n):
            raise SystemExit(f"[demo] {p} covers other videos than {paths[0]}")
        names = n
        y = np.array([labels[str(v)] for v in n])
        per_model[p.parent.name] = float((prob.argmax(1) == y).mean())
        probs.append(prob)
    y = np.array([labels[str(v)] for v in names])
    return float((np.mean(probs, 0).argmax(1) == y).mean()), per_model


def submission_accuracy(path: Path, labels: dict[str, int]) -> tuple[float, int]:
    import pandas as pd

    sub = pd.read_csv(path)
    pred = dict(zip(sub["Video"].astype(str), sub["ClassID"].astype(int)))
    missing = set(labels) - set(pred)
    if missing:
        raise SystemExit(
            f"[demo] submission {path} lacks {len(missing)} test videos, e.g. {sorted(missing)[:3]}"
        )
    return float(np.mean([pred[v] == y for v, y in labels.items()])), len(sub)


def pseudo_precision(csv_path: Path, hidden: dict[str, int]) -> dict[str, float]:
    names, labels, _ = read_pseudo_csv(csv_path)
    ok = [int(labels[i]) == hidden[n] for i, n in enumerate(names)]
    return {"rows": len(names), "precision": float(np.mean(ok)) if ok else 0.0}


def plot_summary(steps: list[dict], normal_val: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(steps) + 2, 4))
    names = [s["name"] for s in steps]
    vals = [100 * s["dark_test_top1"] for s in steps]
    bars = ax.bar(names, vals, color="#3b6ea5")
    ax.axhline(
        100 * normal_val, color="#c44e52", ls="--", label=f"normal-light val ({100 * normal_val:.1f} %)"
    )
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.1f}", ha="center", fontsize=9)
    ax.set_ylabel("dark-test top-1 (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Nightcrawler demo: each step of the method on the synthetic dark test set")
    ax.legend(loc="lower right")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def summary_markdown(summary: dict) -> str:
    lines = [
        "| step | dark-test top-1 | per model |",
        "|---|---:|---|",
    ]
    for s in summary["steps"]:
        per = ", ".join(f"{k} {100 * v:.1f}" for k, v in s.get("per_model", {}).items())
        lines.append(f"| {s['name']} | {100 * s['dark_test_top1']:.1f} % | {per} |")
    lines.append(f"| (normal-light validation) | {100 * summary['normal_val_top1']:.1f} % | |")
    extra = (
        ("adapt_bn_without_gamma_top1", "(adapt BN, test without gamma)"),
        (
            "adapt_bn_raw_clip_stats_top1",
            "(adapt BN on raw dark clips, gamma at test: the original's variant)",
        ),
    )
    for key, text in extra:
        if key in summary:
            lines.append(f"| {text} | {100 * summary[key]:.1f} % | |")
    pl = summary.get("pseudo_labels", {})
    if pl:
        lines += ["", "| pseudo labels | rows | precision (hidden labels) |", "|---|---:|---:|"]
        for k, v in pl.items():
            lines.append(f"| {k} | {v['rows']} | {100 * v['precision']:.1f} % |")
    lines += ["", f"Submission: `{summary['submission']}`; total time {summary['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="demo_work", help="work folder (data, experiments, summary)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data set and of every run")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (for tests)")
    p.add_argument("--stages", type=int, default=None, help="pseudo-label stages (default 2; --quick: 1)")
    p.add_argument("--epochs", type=int, default=None, help="supervised epochs (default 15; --quick: 3)")
    p.add_argument(
        "--models",
        nargs="+",
        default=["uniformer_tiny", "sf_tiny"],
        choices=sorted(MODEL_CONFIGS),
        help="tiny model variants of the ensemble (configs/demo/<name>.yaml)",
    )
    p.add_argument("--verbose", action="store_true", help="show every step's output (else: WORKDIR/demo.log)")
    args = p.parse_args(argv)
    if len(set(args.models)) != len(args.models):
        p.error("--models: each model once")
    plan = make_plan(args)
    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    data = work / "data"
    run = Runner(work, args.verbose)
    t0 = time.time()

    run(
        REPO / "tools" / "make_synthetic.py",
        "--out",
        data,
        "--seed",
        str(plan.seed),
        "--videos-per-class",
        str(plan.videos_per_class),
        "--labeled-per-class",
        str(plan.labeled_per_class),
        "--frames",
        str(plan.frames),
        "--num-classes",
        str(plan.num_classes),
        "--class-cue",
        str(plan.class_cue),
        what="generating the synthetic dark-video set",
    )
    from nightcrawler.config import load_config

    demo_cfg = load_config(str(REPO / "configs" / "demo" / f"{plan.models[0]}.yaml"))
    frames, crop = demo_cfg.DATA.NUM_FRAMES, demo_cfg.DATA.TEST_CROP_SIZE
    test_labels = read_labelled_list(data / "hidden" / "test_labels.csv")
    unlabel_labels = read_labelled_list(data / "hidden" / "total_unlabel_labels.csv")
    class_names = json.loads((data / "synthetic.json").read_text())["class_names"]
    common = {"DATA__PATH_PREFIX": str(data), "RNG_SEED": plan.seed, "MODEL__NUM_CLASSES": len(class_names)}
    test_1x1 = pkl_name("test", frames, crop, 1, 1)
    total_1x1 = pkl_name("total_unlabel", frames, crop, 1, 1)

    # Step 1: supervised training with BN adaptation on the dark videos (the exp_adapt_bn recipe), then one
    # test run over the unlabelled dark videos (input of the pseudo labels), the dark test set and the
    # normal-light validation set, each with and without gamma correction.
    both_gammas = {"TEST__EXTRA_SETTINGS": "['1x1@gnone']"}
    for m in plan.models:
        out = work / "exp_adapt_bn" / m
        run_net(
            run,
            m,
            f"adapt-BN training of {m} ({plan.epochs} epochs) and its tests",
            OUTPUT_DIR=str(out),
            SOLVER__MAX_EPOCH=plan.epochs,
            TEST__DATA_SELECT="total_unlabel",
            TEST__ALSO_SPLITS="['test']",
            **both_gammas,
            **common,
        )
        # Source-only reference: the same weights with BN statistics of the normal-light training clips.
        src = work / "exp_source_only" / m
        # normal-light clips as they are (BN.GAMMA -1): the demo config gamma-corrects only the dark ones
        adapt_bn(
            run,
            m,
            out / "best.pyth",
            src,
            data,
            len(class_names),
            "BN.SPLIT",
            "train_label",
            "BN.GAMMA",
            -1.0,
            what=f"{m}: BN statistics of the normal-light videos (source-only reference)",
        )
        # The original's BN adaptation: statistics of raw (not gamma-corrected) dark clips, gamma at test time.
        raw = work / "exp_adapt_bn_raw_clips" / m
        if plan.original_bn_variant:
            adapt_bn(
                run,
                m,
                out / "best.pyth",
                raw,
                data,
                len(class_names),
                "BN.GAMMA",
                -1.0,
                what=f"{m}: BN statistics of raw dark clips (the original's variant)",
            )
            run_net(
                run,
                m,
                f"{m}: dark test with raw-clip BN statistics",
                OUTPUT_DIR=str(raw),
                TRAIN__ENABLE=False,
                TEST__DATA_SELECT="test",
                **common,
            )
        run_net(
            run,
            m,
            f"{m}: source-only dark test (gamma and no gamma) and normal-light validation",
            OUTPUT_DIR=str(src),
            TRAIN__ENABLE=False,
            TEST__DATA_SELECT="test",
            TEST__ALSO_SPLITS="['val_dry']",
            **both_gammas,
            **common,
        )

    steps = []
    no_gamma = pkl_name("test", frames, crop, 1, 1, "_gnone")
    for name, folder, file in (
        ("source_only", "exp_source_only", no_gamma),
        ("gamma_tta", "exp_source_only", test_1x1),
        ("adapt_bn", "exp_adapt_bn", test_1x1),
    ):
        acc, per = accuracy_of_pkls([work / folder / m / file for m in plan.models], test_labels)
        steps.append({"name": name, "dark_test_top1": acc, "per_model": per})
    acc_nogamma_bn, _ = accuracy_of_pkls(
        [work / "exp_adapt_bn" / m / pkl_name("test", frames, crop, 1, 1, "_gnone") for m in plan.models],
        test_labels,
    )
    extras = {"adapt_bn_without_gamma_top1": acc_nogamma_bn}
    if plan.original_bn_variant:
        extras["adapt_bn_raw_clip_stats_top1"], _ = accuracy_of_pkls(
            [work / "exp_adapt_bn_raw_clips" / m / test_1x1 for m in plan.models], test_labels
        )
    normal_val, _ = accuracy_of_pkls(
        [
            work / "exp_source_only" / m / pkl_name("val_dry", frames, crop, 1, 1, "_gnone")
            for m in plan.models
        ],
        read_labelled_list(data / "val_dry.csv"),
    )

    # Steps 2-4: pseudo labels from the ensemble, then semi-supervised re-training, `stages` times.
    final_pkls = {"views_1x1": test_1x1, "views_3x3": pkl_name("test", frames, crop, 3, 3)}
    pseudo_cfg, pseudo_last_cfg, ens_cfg = write_demo_configs(
        work, plan.models, total_1x1, final_pkls, class_names
    )
    roles = {m: MODEL_CONFIGS[m] for m in plan.models}
    pseudo_stats = {}
    prev = "exp_adapt_bn"
    for k in range(1, plan.stages + 1):
        last = k == plan.stages
        csv = data / "pseudo" / f"stage{k}.csv"
        model_dirs = [a for m in plan.models for a in ("--model-dir", f"{roles[m]}={prev}/{m}")]
        run(
            REPO / "gen_pseudo_tools" / f"generate_pseudo_label_stage{min(k, 4)}.py",
            "--config",
            pseudo_last_cfg if last else pseudo_cfg,
            "--root",
            work,
            *model_dirs,
            "--list",
            data / "total_unlabel.csv",
            "--out",
            csv,
            what=f"pseudo labels, stage {k}",
        )
        pseudo_stats[f"stage{k}"] = pseudo_precision(csv, unlabel_labels)
        stage = f"exp_pseudo_stage{k}"
        for m in plan.models:
            out = work / stage / m
            tests = (
                {
                    "TEST__DATA_SELECT": "test",
                    "TEST__NUM_ENSEMBLE_VIEWS": 3,
                    "TEST__NUM_SPATIAL_CROPS": 3,
                    "TEST__EXTRA_SETTINGS": "['1x1']",
                }
                if last
                else {"TEST__DATA_SELECT": "total_unlabel", "TEST__ALSO_SPLITS": "['test']"}
            )
            run_net(
                run,
                m,
                f"stage-{k} pseudo-label training of {m} ({plan.pseudo_epochs} epochs)",
                OUTPUT_DIR=str(out),
                SOLVER__MAX_EPOCH=plan.pseudo_epochs,
                SOLVER__WARMUP_EPOCHS=0.0,
                TRAIN__CHECKPOINT_FILE_PATH=str(work / prev / m / "best.pyth"),
                TRAIN__CHECKPOINT_EPOCH_RESET=True,
                DATA__PSEUDO_CSV=f"pseudo/stage{k}.csv",
                **tests,
                **common,
            )
        acc, per = accuracy_of_pkls(
            [work / stage / m / (final_pkls["views_3x3"] if last else test_1x1) for m in plan.models],
            test_labels,
        )
        steps.append({"name": f"pseudo_stage{k}", "dark_test_top1": acc, "per_model": per})
        prev = stage

    # Step 5: the final ensemble modes and the vote -> submission CSV.
    final = work / "exp_final"
    final.mkdir()
    for m in plan.models:
        (final / m).symlink_to(work / prev / m, target_is_directory=True)
    sub_dir = work / "submission"
    run(
        REPO / "test_ensemble_vote.py",
        "--config",
        ens_cfg,
        "--root",
        work,
        "--test-csv",
        data / "test.csv",
        "--out-dir",
        sub_dir,
        what="final ensemble and vote",
    )
    ens = yaml.safe_load(ens_cfg.read_text())
    submission = sub_dir / ens["files"]["submission"]
    acc, rows = submission_accuracy(submission, test_labels)
    steps.append({"name": "final_vote", "dark_test_top1": acc})

    summary = {
        "steps": steps,
        "normal_val_top1": normal_val,
        **extras,
        "pseudo_labels": pseudo_stats,
        "submission": str(submission),
        "submission_rows": rows,
        "models": plan.models,
        "plan": plan.__dict__,
        "seconds": time.time() - t0,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    (work / "summary.md").write_text(summary_markdown(summary))
    plot_summary(steps, normal_val, work / "summary.png")
    print()
    print(summary_markdown(summary))
    print(f"[demo] summary: {work / 'summary.json'}, {work / 'summary.md'}, {work / 'summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
