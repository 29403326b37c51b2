"""Command-line entry points behind ``gen_pseudo_tools/*.py`` and ``test_ensemble_vote.py``."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from nightcrawler.pseudo.config import (
    CRITERIA,
    SearchConfig,
    StageConfig,
    load_ensemble_config,
    load_search_config,
    load_stage_config,
    load_thresholds_file,
)
from nightcrawler.pseudo.fuse import fuse_predictions
from nightcrawler.pseudo.io import PseudoLabelError, read_labelled_list
from nightcrawler.pseudo.report import class_summary, write_report
from nightcrawler.pseudo.search import (
    choose_thresholds,
    match_ground_truth,
    original_printout,
    sweep,
    table_csv,
    thresholds_yaml,
)
from nightcrawler.pseudo.stage import (
    load_aligned,
    resolve_pkl_paths,
    run_stage,
    write_decisions,
    write_stage_csv,
)
from nightcrawler.pseudo.vote import (
    PROBABILITY_FORMATS,
    EnsembleResult,
    resolve_mode_paths,
    run_ensemble,
    write_ensemble_files,
)
from nightcrawler.resources import config_path
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.io import atomic_open, atomic_write_text

# The original stage scripts' argument names -> model roles of configs/pseudo/stage*.yaml.
LEGACY_PKL_ARGS = {
    "gen_label_pkl_path_ssv2_best": "ssv2",
    "gen_label_pkl_path_uni_best": "k600",
    "gen_label_pkl_path_mvit_best": "mvit",
    "gen_label_pkl_path_slowfast_best": "slowfast",
}


def _pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise PseudoLabelError(f"{what} expects NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def _add_pkl_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model inputs")
    group.add_argument(
        "--root", default=".", help="folder the config's relative paths start from (default: .)"
    )
    group.add_argument(
        "--pkl",
        action="append",
        metavar="ROLE=PATH",
        help="PKL of one model role (repeatable); overrides the config",
    )
    group.add_argument("--pkl-name", help="PKL file name inside each model folder (default: from the config)")
    group.add_argument(
        "--model-dir",
        action="append",
        metavar="ROLE=DIR",
        help="folder of a role's PKL under --root (repeatable)",
    )
    group.add_argument(
        "--same-pkl",
        action="append",
        metavar="SLOT=ROLE",
        help="let model slot SLOT read role ROLE's PKL (e.g. slowfast=k600: the original stage-3 wiring)",
    )
    group.add_argument(
        "--list",
        "--gen_label_list_path",
        dest="list_csv",
        help="list CSV giving the row order (required for PKLs without video_names; default: from the config)",
    )
    legacy = parser.add_argument_group("the original scripts' argument names (still accepted)")
    for arg, role in LEGACY_PKL_ARGS.items():
        legacy.add_argument(
            f"--{arg}", dest=f"legacy_{role}", metavar="PATH", help=f"same as --pkl {role}=PATH"
        )


def _pkl_overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides = _pairs(args.pkl, "--pkl")
    for role in LEGACY_PKL_ARGS.values():
        value = getattr(args, f"legacy_{role}")
        if value:
            overrides[role] = value
    return overrides


def _list_csv(args: argparse.Namespace, default: str | None, root: Path) -> Path | None:
    """The list CSV: explicit (must exist), else the config's default under root (used only if present)."""
    if args.list_csv:
        path = Path(args.list_csv)
        if not path.is_file():
            raise PseudoLabelError(f"list CSV not found: {path}")
        return path
    if default and (root / default).is_file():
        return root / default
    return None


# --------------------------------------------------------------------------------------------- stages


def _stage_epilog(config: Path) -> str:
    """The default inputs and output of a stage config, for --help."""
    try:
        cfg = load_stage_config(config)
    except PseudoLabelError:
        return ""
    lines = [f"defaults of {config.name} (relative to --root):", f"  list CSV: {cfg.list_csv}"]
    for role, model in cfg.models.items():
        lines.append(f"  {role}: {model.resolve(Path('.'), cfg.pkl_name)}")
    lines += [
        f"  output: {cfg.output} (+ _report.md/.csv/.png and _decisions.csv beside it)",
        "PKLs with video_names are aligned by name (to the list CSV when present); PKLs without names",
        "(the original's) pair with the list CSV's lines by position.",
    ]
    return "\n".join(lines)


def stage_parser(stage: int) -> argparse.ArgumentParser:
    config = config_path("pseudo", f"stage{stage}.yaml")
    parser = argparse.ArgumentParser(
        description=f"Stage-{stage} pseudo labels: fuse the models' PKLs (softmax, weighted, class-conditional "
        "weights), keep confident rows, write the pseudo-label CSV (no header: video, label, fused scores) and "
        "a report beside it. Everything numeric comes from the YAML config.",
        epilog=_stage_epilog(config),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=str(config),
        help="stage YAML (default: %(default)s)",
    )
    _add_pkl_args(parser)
    parser.add_argument(
        "--out", "--path_pseudo_label", dest="out", help="output CSV (default: ROOT/<config output>)"
    )
    parser.add_argument(
        "--thresholds", help="YAML of thresholds written by search_thresholds.py (replaces the config's)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report / decisions files")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart of the report")
    return parser


def stage_main(stage: int, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``generate_pseudo_label_stage{stage}.py``."""
    return run_cli(functools.partial(_stage_main, stage), argv)


# the console scripts nightcrawler-pseudo-stage{1..4} (setup.py entry_points call a function without arguments)
def stage1_main(argv: Sequence[str] | None = None) -> int:
    return stage_main(1, argv)


def stage2_main(argv: Sequence[str] | None = None) -> int:
    return stage_main(2, argv)


def stage3_main(argv: Sequence[str] | None = None) -> int:
    return stage_main(3, argv)


def stage4_main(argv: Sequence[str] | None = None) -> int:
    return stage_main(4, argv)


def _stage_main(stage: int, argv: Sequence[str] | None = None) -> int:
    args = stage_parser(stage).parse_args(argv)
    cfg = load_stage_config(args.config)
    root = Path(args.root)
    paths = resolve_pkl_paths(
        cfg,
        root,
        _pkl_overrides(args),
        args.pkl_name,
        _pairs(args.same_pkl, "--same-pkl"),
        _pairs(args.model_dir, "--model-dir"),
    )
    selection = load_thresholds_file(args.thresholds, cfg.num_classes) if args.thresholds else None
    result = run_stage(cfg, paths, _list_csv(args, cfg.list_csv, root), selection)
    out = Path(args.out) if args.out else root / cfg.output
    write_stage_csv(out, result)
    print(f"{cfg.name}: kept {int(result.keep.sum())} of {len(result.names)} videos -> {out}")
    for role, path in paths.items():
        print(f"  {role}: {path}")
    if not args.no_report:
        rows = class_summary(
            result.labels, result.confidence, result.keep, cfg.num_classes, result.limits, cfg.class_names
        )
        written = write_report(out, rows, f"{cfg.name}: {out.name}", chart=not args.no_chart)
        decisions = write_decisions(out.with_name(f"{out.stem}_decisions.csv"), result, cfg.fusion)
        print(f"  report: {', '.join(str(p) for p in [*written.values(), decisions])}")
    return 0


# --------------------------------------------------------------------------------------------- search


def search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Per-class threshold search on a labelled dark validation set (ARID in the original): fuse "
        "the models as a stage does, sweep a threshold grid for every class at once, pick thresholds by a "
        "criterion and write a YAML the stage scripts accept via --thresholds.",
    )
    parser.add_argument(
        "--config",
        default=str(config_path("pseudo", "search.yaml")),
        help="search YAML (default: %(default)s)",
    )
    parser.add_argument(
        "--stage", type=int, default=1, choices=(1, 2, 3, 4), help="stage whose fusion/inputs to use"
    )
    parser.add_argument("--stage-config", help="stage YAML (default: configs/pseudo/stage{--stage}.yaml)")
    _add_pkl_args(parser)
    parser.add_argument(
        "--ground-truth", help="headerless name,label CSV (default: ROOT/<config ground_truth>)"
    )
    parser.add_argument(
        "--skip-rows",
        type=int,
        help="drop this many leading PKL rows before pairing (the original: 3088; default: from the config)",
    )
    parser.add_argument(
        "--grid", nargs=3, type=float, metavar=("START", "STOP", "NUM"), help="numpy linspace grid"
    )
    parser.add_argument(
        "--criterion",
        choices=CRITERIA,
        help="how to pick a threshold per class (original: also counts a class's real videos over the whole "
        "ground-truth file, as the original did; f1 / min_precision: over the videos with a PKL row)",
    )
    parser.add_argument("--min-precision", type=float, help="target precision of --criterion min_precision")
    parser.add_argument("--out", help="thresholds YAML (default: ROOT/<config output>)")
    parser.add_argument("--table", help="also write every (class, threshold) metric row to this CSV")
    parser.add_argument(
        "--original-printout",
        action="store_true",
        help="print exactly what the original script printed (for --class), other messages go to stderr",
    )
    parser.add_argument(
        "--class",
        dest="classes",
        type=int,
        action="append",
        help="class(es) for --original-printout (default: the config's printout_classes; the original: 10)",
    )
    return parser


def _search_data(
    args: argparse.Namespace, scfg: SearchConfig, cfg: StageConfig, root: Path, info: TextIO
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int], Path]:
    """Fused labels / confidences of the videos that have ground truth, their truth, and the truth map."""
    paths = resolve_pkl_paths(
        cfg,
        root,
        _pkl_overrides(args),
        args.pkl_name,
        _pairs(args.same_pkl, "--same-pkl"),
        _pairs(args.model_dir, "--model-dir"),
    )
    skip = scfg.skip_rows if args.skip_rows is None else args.skip_rows
    list_csv = Path(args.list_csv) if args.list_csv else None
    if list_csv is None and scfg.list_csv is not None:
        list_csv = root / scfg.list_csv
    aligned = load_aligned(paths, cfg.num_classes, list_csv, skip_rows=skip, allow_extra=True)
    gt_path = Path(args.ground_truth) if args.ground_truth else root / scfg.ground_truth
    truth_map = read_labelled_list(gt_path)
    truth, labelled = match_ground_truth(aligned.names, truth_map, cfg.num_classes, str(gt_path))
    if not labelled.all():
        first = aligned.names[int(np.argmin(labelled))]
        print(
            f"note: {int((~labelled).sum())} videos have no ground truth and are left out (first: '{first}')",
            file=info,
        )
    fused = fuse_predictions(aligned.preds, cfg.fusion)
    return fused.labels[labelled], fused.confidence[labelled], truth[labelled], truth_map, gt_path


def search_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gen_pseudo_tools/search_thresholds.py``."""
    return run_cli(_search_main, argv)


def _search_main(argv: Sequence[str] | None = None) -> int:
    args = search_parser().parse_args(argv)
    info = sys.stderr if args.original_printout else sys.stdout  # keep stdout exact in printout mode
    scfg = load_search_config(args.config)
    cfg = load_stage_config(args.stage_config or config_path("pseudo", f"stage{args.stage}.yaml"))
    root = Path(args.root)
    labels, confidence, truth, truth_map, gt_path = _search_data(args, scfg, cfg, root, info)
    start, stop, num = args.grid if args.grid else scfg.grid
    criterion = args.criterion or scfg.criterion
    # the original counts the real labels (R) over the whole ground-truth file, also videos without a PKL row
    whole_file = np.bincount(np.fromiter(truth_map.values(), dtype=np.int64), minlength=cfg.num_classes)
    table = sweep(
        labels,
        confidence,
        truth,
        np.linspace(start, stop, int(num)),
        cfg.num_classes,
        positives=whole_file if criterion == "original" else None,
    )
    if args.original_printout:
        for cls in args.classes or scfg.printout_classes:
            if not 0 <= cls < cfg.num_classes:
                raise PseudoLabelError(f"--class {cls} outside 0..{cfg.num_classes - 1}")
            lines, error = original_printout(table, cls, int(whole_file[cls]))
            print("\n".join(lines), flush=True)
            if error:
                print(f"the original search stops here for class {cls}: {error}", file=sys.stderr)
    min_precision = scfg.min_precision if args.min_precision is None else args.min_precision
    choices = choose_thresholds(table, criterion, min_precision, scfg.missing_threshold)
    header = (
        f"# Thresholds from gen_pseudo_tools/search_thresholds.py ({cfg.name} fusion, criterion {criterion}).\n"
        "# Use: generate_pseudo_label_stageK.py --thresholds THIS_FILE\n"
    )
    extra = {
        "fusion_config": str(cfg.source),
        "ground_truth": str(gt_path),
        "videos_evaluated": int(truth.size),
        "grid": {"start": float(start), "stop": float(stop), "num": int(num)},
    }
    if criterion == "min_precision":
        extra["min_precision"] = float(min_precision)
    out = Path(args.out) if args.out else root / scfg.output
    atomic_write_text(out, thresholds_yaml(choices, table, criterion, header, cfg.class_names, extra))
    if args.table or scfg.table:
        atomic_write_text(Path(args.table) if args.table else root / scfg.table, table_csv(table))
    print(f"thresholds ({criterion}): {[round(c.threshold, 6) for c in choices]} -> {out}", file=info)
    return 0


# --------------------------------------------------------------------------------------------- vote


def vote_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Final ensemble: run the ensemble modes of the config (fusion, Run/Walk override, "
        "post-processing passes), vote across modes and write the per-mode files and the submission "
        "(VideoID,Video,ClassID + probabilities).",
        epilog="With configs/ensemble/original.yaml, ROOT holds exp_pseudo_stage4/<model>/testx32x224x{1x3,3x3}.pkl "
        "for the four stage-4 models and exp_experts/uniformer_b32_ssv2/testx32x224x{1x1,3x3}.pkl; the "
        "outputs are OUT_DIR/arid_pred_<mode>.csv, OUT_DIR/arid_pred.csv (the vote) and OUT_DIR/vote_details.csv. "
        "PKLs with video_names are aligned to the test CSV by name; PKLs without names pair with its lines "
        "by position.",
    )
    parser.add_argument(
        "--config",
        default=str(config_path("ensemble", "original.yaml")),
        help="ensemble YAML (default: %(default)s)",
    )
    parser.add_argument(
        "--root",
        default=".",
        help="folder holding exp_pseudo_stage4/<model>/testx32x224x{1x3,3x3}.pkl and exp_experts/... (default: .)",
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument(
        "--test-csv",
        help="test list, row i -> VideoID i (default: ROOT/<config test_csv>, data/test.csv in the shipped "
        "configs); a missing file is an error",
    )
    order.add_argument(
        "--order-from-pkl",
        action="store_true",
        help="read no test CSV: rows follow the PKLs' own video_names order (PKLs written by our tester)",
    )
    parser.add_argument(
        "--out-dir", help="folder for the per-mode files and the submission (default: ROOT/submission)"
    )
    parser.add_argument("--modes", nargs="+", help="modes to run (default: every mode of the config)")
    parser.add_argument(
        "--vote-modes", nargs="+", help="modes that vote (default: from the config; original: 1 4)"
    )
    parser.add_argument(
        "--vote",
        choices=("original", "majority"),
        help="original: most frequent class, ties to the smaller id; majority: ties broken by probability",
    )
    parser.add_argument(
        "--probability-format",
        choices=PROBABILITY_FORMATS,
        default="columns",
        help="columns: plain numbers p0..pC-1 (default); torch: the original's printed-tensor column, CRLF",
    )
    parser.add_argument(
        "--model-dir", action="append", metavar="ROLE=DIR", help="change a role's folder under ROOT"
    )
    parser.add_argument(
        "--pkl",
        action="append",
        metavar="[SET:]ROLE=PATH",
        help="explicit PKL of a role (in every PKL set, or only in SET, e.g. views_3x3:dense=FILE)",
    )
    parser.add_argument("--intermediate", help="also save every mode's arrays to this .npz")
    parser.add_argument("--no-report", action="store_true", help="skip the report of the submission")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart of the report")
    return parser


def _test_csv(explicit: str | None, root: Path, default: str) -> Path:
    """The test list giving the submission's row order; missing (given or default) is an error."""
    path = Path(explicit) if explicit else root / default
    if not path.is_file():
        where = "--test-csv" if explicit else f"the default ROOT/{default}"
        raise PseudoLabelError(
            f"test CSV not found: {path} ({where}); give the test list with --test-csv FILE, or pass "
            "--order-from-pkl to order the rows by the PKLs' video_names instead"
        )
    return path


def vote_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``test_ensemble_vote.py``."""
    return run_cli(_vote_main, argv)


def _vote_main(argv: Sequence[str] | None = None) -> int:
    args = vote_parser().parse_args(argv)
    cfg = load_ensemble_config(args.config)
    root = Path(args.root)
    mode_paths = resolve_mode_paths(
        cfg, root, _pairs(args.model_dir, "--model-dir"), _pairs(args.pkl, "--pkl")
    )
    test_csv = None if args.order_from_pkl else _test_csv(args.test_csv, root, cfg.test_csv)
    result = run_ensemble(cfg, mode_paths, test_csv, args.modes, args.vote_modes, args.vote)
    out_dir = Path(args.out_dir) if args.out_dir else root / cfg.out_dir
    written = write_ensemble_files(result, cfg, out_dir, args.probability_format)
    if args.intermediate:
        _save_intermediate(args.intermediate, result)
    if test_csv is None:
        print("note: --order-from-pkl: no test CSV read; rows follow the PKLs' own video_names order")
    for name, mode in result.modes.items():
        changed = int((mode.rules.times_changed > 0).sum())
        counts = np.bincount(mode.final_pred, minlength=cfg.num_classes).tolist()
        print(
            f"mode {name}: {int((mode.fusion.branch >= 0).sum())} rows on a class-conditional weight rule, "
            f"{int((mode.fusion.replaced_by >= 0).sum())} replaced, {changed} changed by passes; classes {counts}"
        )
    sources = {s: result.source.count(s) for s in dict.fromkeys(result.source)}
    print(f"vote ({result.method}) over modes {list(result.voters)}: rows from {json.dumps(sources)}")
    print(f"submission: {written['submission']}  (details: {written['details']})")
    if not args.no_report:
        conf = result.probability[np.arange(result.voted.size), result.voted]
        rows = class_summary(
            result.voted, conf, np.ones(result.voted.size, bool), cfg.num_classes, None, cfg.class_names
        )
        write_report(
            written["submission"], rows, f"submission {written['submission'].name}", chart=not args.no_chart
        )
    return 0


def _save_intermediate(path: str, result: EnsembleResult) -> None:
    """Every mode's arrays under the key names of golden/vote/expected/intermediate.npz, plus the vote."""
    arrays = {}
    for name, mode in result.modes.items():
        arrays[f"mode{name}_blend_before_slowfast_replacement"] = mode.fusion.blend
        arrays[f"mode{name}_fused_probs"] = mode.fusion.fused
        arrays[f"mode{name}_argmax"] = mode.argmax
        arrays[f"mode{name}_final_pred"] = mode.final_pred
        arrays[f"mode{name}_final_probability"] = mode.probability
    arrays["vote"] = result.voted
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
