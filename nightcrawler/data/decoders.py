"""Video decoding: one reader interface (frames at indices) over PyAV, decord and torchcodec.

``open_video(path, backend)`` returns a :class:`VideoReader` whose ``num_frames`` is the number of frames that
really decode and whose ``frames_at(indices)`` returns those frames, uint8 ``(T, H, W, 3)`` RGB, in the order asked.

Which path reads a file (the rule; ``tests/data/test_decoders.py`` checks it on real footage and trap files):

* Every reader starts with a probe (:func:`probe_video`): PyAV demuxes the file, decoding only its first frame
  (for the display matrix), and counts the video packets that are neither empty nor flagged "discard" (the pre-roll of
  an edit-list cut). That count is ``num_frames``; container header counts and decord's ``len`` can be larger
  (an MP4 cut with ``ffmpeg -ss 1.3 -c copy`` says 24 and decodes 21) and are clamped to it. When frames
  precede the first keyframe (a copy-cut AVI starts with B-frames whose references are gone), the probe
  decodes the file once to count the frames that really come out.
* ``"auto"`` picks, per file, the fastest path whose frames are right for it: random access where it is exact
  (seek-safe H.264/HEVC in MP4/MOV/Matroska, plain 8-bit 4:2:0 with even sides, the reader counting the
  frames the probe counts: the rule of ``"decord"`` below), through torchcodec when it loads (the faster of
  the two in ``tools/benchmark_loader.py``, docs/PERFORMANCE.md) and decord otherwise, and PyAV in
  presentation order on every other file (edit-list cuts, open GOPs, AVI, MPEG-4 Part 2, 10-bit, odd sizes),
  or when neither random-access library is installed.
  The choice follows from the probe, which is cached per file (path, size, modification time) in each process.
* ``"pyav"`` decodes the range from the first to the last wanted frame in order and converts only the wanted
  frames to RGB. It starts at frame 0, except in containers with reliable timestamps (MP4/MOV/Matroska) when a
  keyframe lies after frame 0 and at or before the first wanted frame: it then seeks to that keyframe, maps
  every decoded frame to its index by timestamp, and decodes from frame 0 instead if the seek landed late or a
  timestamp is unknown.
* ``"decord"`` uses decord's random access (``get_batch``) only on seek-safe files: H.264/HEVC in
  MP4/MOV/Matroska without edit-list pre-roll or open GOPs, where decord's count equals the probe's. On other
  files its seeks return wrong frames (MPEG-4 Part 2 with B-frames, anything in AVI, edit-list cuts, frames
  after an open-GOP keyframe), so a fresh decord reader reads contiguous chunks from frame 0, which it gets
  right. decord reads only 8-bit 4:2:0 files with even sides (:attr:`VideoProbe.plain_420`); its RGB
  conversion differs from the ffmpeg CLI on 10-bit and odd-size files (up to 16 levels), so PyAV reads those.
* ``"torchcodec"`` (exact seek mode) reads seek-safe files (the same rule as decord's random access) whose
  frame count it gets right. On other files PyAV reads the file instead: AVI (it raises or returns shifted
  frames; with a warning), edit-list cuts, open GOPs (after a seek its frames shift by one, e.g. HEVC cuts)
  and files with undecodable leading frames (it counts and pads them).
* Undecodable leading frames: a copy-cut open-GOP Matroska file keeps the leading pictures of its first
  keyframe without timestamps; they never decode. The probe flags this (``uncertain_start``) and counts the
  frames by decoding once; decord's larger count is clamped and it reads such files in order.

Orientation: every reader returns frames rotated for display, as the ffmpeg CLI and decord do. The probe
decodes the first frame to read its display matrix (``VideoProbe.rotation``, degrees counterclockwise; PyAV
exposes no stream-level display matrix); the PyAV path turns frames with ``np.rot90`` and every reader's
``height``/``width`` are the displayed ones (``VideoProbe.width``/``height`` stay the stored ones).

RGB conversion: the rule is "what ``ffmpeg -i f -f rawvideo -pix_fmt rgb24 -`` gives". The PyAV path
converts 10-bit, odd-size and other non-plain files with the filter graph the CLI builds (``scale`` with
bicubic flags, then ``format=rgb24``; :class:`RGBConverter`), equal to the CLI's output; PyAV's
``VideoReformatter`` differed by up to ~100 levels there. On plain 8-bit 4:2:0 files with even sides the
reused reformatter already gives the CLI's pixels exactly and is faster per read, so it stays there.
torchcodec matches the CLI on all of these; decord only on plain files (see above).

Each reader uses ``threads`` decoder threads (default 1: one per DataLoader worker). Missing, unreadable or
frame-less files raise :class:`VideoDecodeError` naming the file.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav", "decord", "torchcodec")
GAMMA_SUFFIX = "_GIC"  # the original's "decord_GIC" = decord + gamma-intensity correction
TORCHCODEC_INSTALL_HINT = (
    "install it with `pip install torchcodec==0.17.0` (wheels for torch 2.14) and the FFmpeg shared "
    "libraries it loads at run time (Debian/Ubuntu: `apt-get install ffmpeg`)"
)

_TIMESTAMP_CONTAINERS = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm"}
_DECORD_SEEK_SAFE_CODECS = {"h264", "hevc"}
_DECORD_CHUNK = 16  # frames per contiguous decord read on files where its seeks are unsafe


class VideoDecodeError(RuntimeError):
    """A video cannot be opened or decoded; ``path`` names the file and ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode video '{self.path}': {reason}")

    def __reduce__(self):  # keeps the two-argument form picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


class BackendUnavailableError(RuntimeError):
    """A decoding backend was selected whose library cannot be loaded here."""


@dataclass(frozen=True)
class VideoProbe:
    """What the demuxer says about a file's first video stream (no decoding)."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    header_frames: int
    frame_pts: tuple[int, ...]  # presentation timestamps in display order; empty if any is unknown
    keyframes: tuple[int, ...]  # display indices of keyframes (needs frame_pts)
    edit_list_preroll: int  # packets flagged "discard" (decoded only as references, never shown)
    open_gop: bool = False  # some keyframe after the first has frames shown before it
    uncertain_start: bool = False  # frames may fail to decode at the start (counted by decoding, see probe)
    rotation: int = 0  # display-matrix rotation, degrees counterclockwise: 0, 90, 180 or 270
    pix_fmt: str = ""  # the decoder's pixel format, e.g. yuv420p or yuv420p10le

    @property
    def plain_420(self) -> bool:
        """8-bit 4:2:0 with even sides: the files where decord's RGB conversion equals the ffmpeg CLI's."""
        return self.pix_fmt in ("yuv420p", "yuvj420p") and self.width % 2 == 0 and self.height % 2 == 0

    @property
    def display_size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames as displayed (and as every reader returns them)."""
        return (self.width, self.height) if self.rotation in (90, 270) else (self.height, self.width)

    @property
    def timestamp_container(self) -> bool:
        return bool(_TIMESTAMP_CONTAINERS & set(self.container.split(",")))

    @property
    def seekable(self) -> bool:
        """Whether seeking by timestamp can be verified frame by frame."""
        return self.timestamp_container and len(self.frame_pts) == self.num_frames > 0

    @property
    def decord_seek_safe(self) -> bool:
        """Whether decord's random access returned the right frames on files of this kind (see module doc)."""
        return (
            self.timestamp_container
            and self.codec in _DECORD_SEEK_SAFE_CODECS
            and self.edit_list_preroll == 0
            and not self.open_gop
            and not self.uncertain_start
        )

    @property
    def torchcodec_seek_safe(self) -> bool:
        """Whether torchcodec's exact-mode random access returns the right frames (same rule as decord)."""
        return self.decord_seek_safe


def parse_backend(name: str) -> tuple[str, bool]:
    """Splits a decoding-backend name into ``(backend, gamma_mode)``.

    Accepts the new names (``auto``, ``pyav``, ``decord``, ``torchcodec``) and the original's ``decord_GIC``
    (decord with gamma correction); the ``_GIC`` suffix works on every backend.
    """
    if not isinstance(name, str):
        raise ValueError(f"decoding backend must be a string, got {name!r}")
    base, gamma = name, False
    if name.upper().endswith(GAMMA_SUFFIX):
        base, gamma = name[: -len(GAMMA_SUFFIX)], True
    base = base.lower()
    if base not in BACKENDS:
        valid = ", ".join(BACKENDS + tuple(b + GAMMA_SUFFIX for b in BACKENDS[1:]))
        raise ValueError(f"unknown decoding backend {name!r}; expected one of: {valid}")
    return base, gamma


_PROBE_CACHE: OrderedDict[tuple[str, int, int], VideoProbe] = OrderedDict()
PROBE_CACHE_SIZE = 4096  # probes kept per process (a DataLoader worker meets each video once per epoch)


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """The :class:`VideoProbe` of ``path`` (see :func:`probe_file`), cached per process by path, size and
    modification time, so that reading a video again (another epoch, another view) does not demux it again."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return probe_file(path)  # raises the file-not-found error
    key = (path, st.st_size, st.st_mtime_ns)
    probe = _PROBE_CACHE.get(key)
    if probe is None:
        probe = probe_file(path)
        _PROBE_CACHE[key] = probe
        while len(_PROBE_CACHE) > PROBE_CACHE_SIZE:
            _PROBE_CACHE.popitem(last=False)
    else:
        _PROBE_CACHE.move_to_end(key)
    return probe


def probe_file(path: str | os.PathLike) -> VideoProbe:
    """Demuxes ``path`` once and returns its :class:`VideoProbe`; raises :class:`VideoDecodeError`.

    Files whose first keyframe has frames before it (in decode or display order) may hold frames that cannot
    be decoded (a copy-cut AVI starts with B-frames whose references were cut away); those are decoded once
    here so that ``num_frames`` and the timestamp table list exactly the frames that decode.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            packets: list[tuple[int | None, bool]] = []  # (pts, keyframe) in decode order
            discarded = 0
            rotation = None  # read from the first decoded frame (PyAV exposes no stream display matrix)
            ctx.thread_count = 1
            for packet in container.demux(stream):
                if rotation is None and packet.size:
                    try:
                        for frame in ctx.decode(packet):
                            rotation = int(round(frame.rotation or 0)) % 360
                            break
                    except av.FFmpegError:
                        pass
                if packet.size == 0:
                    continue
                if packet.is_discard:
                    discarded += 1
                    continue
                packets.append((packet.pts, bool(packet.is_keyframe)))
            fields = dict(
                container=container.format.name,
                codec=ctx.name,
                width=int(ctx.width),
                height=int(ctx.height),
                fps=float(rate) if rate else 0.0,
                header_frames=int(stream.frames or 0),
                pix_fmt=ctx.format.name if ctx.format else "",
            )
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(path, f"unreadable container ({exc})") from exc
    if not packets:
        raise VideoDecodeError(path, "the video stream has no frames")
    uncertain_start, open_gop = _leading_pictures(packets)
    pts = [p for p, _ in packets]
    if uncertain_start:
        pts = _decoded_pts(path)
        if not pts:
            raise VideoDecodeError(path, "none of its frames decodes")
    frame_pts: tuple[int, ...] = ()
    keyframes: tuple[int, ...] = ()
    if None not in pts and len(set(pts)) == len(pts):
        frame_pts = tuple(sorted(pts))
        where = {p: i for i, p in enumerate(frame_pts)}
        keyframes = tuple(sorted(where[p] for p, key in packets if key and p in where))
    return VideoProbe(
        path=path,
        num_frames=len(pts),
        frame_pts=frame_pts,
        keyframes=keyframes,
        edit_list_preroll=discarded,
        open_gop=open_gop,
        uncertain_start=uncertain_start,
        rotation=rotation if rotation in (90, 180, 270) else 0,
        **fields,
    )


def _leading_pictures(packets: Sequence[tuple[int | None, bool]]) -> tuple[bool, bool]:
    """``(uncertain_start, open_gop)`` from packets in decode order.

    ``uncertain_start``: packets precede the first keyframe, or frames shown before it follow it, or packets
    without a timestamp follow it (the leading pictures of a copy-cut open-GOP Matroska file: their
    timestamps fell before the cut and their references are gone, so the decoder drops them). ``open_gop``: a later keyframe has such leading
    frames (decord's seeks then land on wrong frames).
    """
    keys = [i for i, (_, key) in enumerate(packets) if key]
    if not keys:
        return True, False
    uncertain, open_gop = keys[0] > 0, False
    for n, i in enumerate(keys):
        key_pts = packets[i][0]
        end = keys[n + 1] if n + 1 < len(keys) else len(packets)
        if key_pts is None:
            continue
        lead = [p for p, _ in packets[i + 1 : end]]
        if n == 0 and None in lead:
            uncertain = True
        if any(p is not None and p < key_pts for p in lead):
            if n == 0:
                uncertain = True
            else:
                open_gop = True
    return uncertain, open_gop


def _decoded_pts(path: str) -> list[int | None]:
    """Timestamps of the frames that really decode, in output order (one full decode, no RGB conversion)."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            return [frame.pts for frame in container.decode(stream)]
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(path, f"decoding failed ({exc})") from exc


class VideoReader:
    """Common interface: ``num_frames``, ``fps``, ``frames_at(indices)``, ``close()``; a context manager."""

    backend = "base"

    def __init__(self, probe: VideoProbe, threads: int = 1):
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = decoder's choice), got {threads}")
        self.probe = probe
        self.path = probe.path
        self.threads = threads
        self.num_frames = probe.num_frames
        self.fps = probe.fps
        self.height, self.width = probe.display_size

    def __len__(self) -> int:
        return self.num_frames

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the decoder (idempotent)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:g})"

    def frames_at(self, indices: Iterable[int] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """Frames at ``indices`` (repeats allowed) as uint8 ``(len(indices), H, W, 3)`` RGB, in that order."""
        idx = self._check_indices(indices)
        if not idx:
            return torch.empty((0, self.height, self.width, 3), dtype=torch.uint8)
        wanted = sorted(set(idx))
        try:
            decoded = self._decode(wanted)
        except VideoDecodeError:
            raise
        except (av.FFmpegError, RuntimeError, OSError, ValueError) as exc:
            raise VideoDecodeError(self.path, f"{self.backend} failed while decoding ({exc})") from exc
        missing = [i for i in wanted if i not in decoded]
        if missing:
            raise VideoDecodeError(
                self.path,
                f"frames {missing[:5]} did not decode (the demuxer counts {self.num_frames} frames)",
            )
        return torch.from_numpy(np.stack([decoded[i] for i in idx]))

    def _check_indices(self, indices) -> list[int]:
        if isinstance(indices, torch.Tensor | np.ndarray):
            indices = indices.tolist()
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < self.num_frames]
        if bad:
            raise IndexError(
                f"frame indices {bad[:5]} out of range [0, {self.num_frames}) for video '{self.path}'"
            )
        return idx

    def _decode(self, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        """Decodes the sorted unique indices ``wanted``; returns index -> (H, W, 3) uint8 array."""
        raise NotImplementedError


class RGBConverter:
    """The ffmpeg CLI's YUV->RGB conversion for one stream: a ``scale`` (bicubic, the CLI's default) +
    ``format=rgb24`` filter graph, as ``ffmpeg -i f -f rawvideo -pix_fmt rgb24 -`` builds. It matches the CLI
    exactly on 10-bit and odd-size 4:2:0 files (PyAV's ``VideoReformatter`` differs there by up to ~100
    levels) and is as fast as the reformatter on 8-bit files (measured ~100 vs ~170 us per 320x240 frame)."""

    def __init__(self, stream):
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=stream), graph.add("scale", "flags=bicubic")]
        chain += [graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        self._graph = graph

    def __call__(self, frame) -> np.ndarray:
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()


class PyAVReader(VideoReader):
    """PyAV: in-order decoding of the needed range with one reused RGB reformatter (see module doc)."""

    backend = "pyav"

    def __init__(self, probe: VideoProbe, threads: int = 1):
        super().__init__(probe, threads)
        self._pts_index = {p: i for i, p in enumerate(probe.frame_pts)}
        self._reformatter = VideoReformatter()  # reused: the fast path for plain 8-bit 4:2:0 files
        self._turns = probe.rotation // 90  # np.rot90 turns counterclockwise, like the display matrix

    def seek_start(self, first: int) -> int:
        """Display index of the keyframe a read for frames from ``first`` on starts at (0 = no seek)."""
        if not self.probe.seekable:
            return 0
        k = bisect.bisect_right(self.probe.keyframes, first) - 1
        return self.probe.keyframes[k] if k >= 0 else 0

    def _decode(self, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        start = self.seek_start(wanted[0])
        if start > 0:
            out = self._read(wanted, start)
            if out is not None and len(out) == len(wanted):
                return out
            logger.debug("seek in %s did not reach frame %d; decoding from the start", self.path, wanted[0])
        return self._read(wanted, 0)

    def _read(self, wanted: Sequence[int], start: int) -> dict[int, np.ndarray] | None:
        want, last, out = set(wanted), wanted[-1], {}
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = self.threads
            if self.threads != 1:
                stream.codec_context.thread_type = "AUTO"
            to_rgb = self._fast_rgb if self.probe.plain_420 else RGBConverter(stream)
            if start > 0:
                container.seek(self.probe.frame_pts[start], stream=stream, backward=True, any_frame=False)
            for count, frame in enumerate(container.decode(stream)):
                if start > 0:
                    k = self._pts_index.get(frame.pts)
                    if k is None or (count == 0 and k > wanted[0]):
                        return None
                else:
                    k = count
                if k in want:
                    rgb = to_rgb(frame)
                    out[k] = np.ascontiguousarray(np.rot90(rgb, self._turns)) if self._turns else rgb
                if k >= last:
                    break
        return out

    def _fast_rgb(self, frame) -> np.ndarray:
        return self._reformatter.reformat(
            frame, width=self.probe.width, height=self.probe.height, format="rgb24"
        ).to_ndarray()


def _import_decord():
    try:
        import decord
    except ImportError as exc:
        raise BackendUnavailableError(
            f"decord backend selected but not importable ({exc}); pip install decord"
        ) from exc
    return decord


class DecordReader(VideoReader):
    """decord: batched random access on seek-safe files, contiguous reads from frame 0 elsewhere."""

    backend = "decord"

    def __init__(self, probe: VideoProbe, threads: int = 1):
        super().__init__(probe, threads)
        self._decord = _import_decord()
        self._vr = self._open()
        self.num_frames = min(len(self._vr), probe.num_frames)
        self.random_access = probe.decord_seek_safe and len(self._vr) == probe.num_frames

    def _open(self):
        try:
            return self._decord.VideoReader(self.path, ctx=self._decord.cpu(0), num_threads=self.threads)
        except Exception as exc:  # decord raises its own DECORDError (a RuntimeError) or others
            raise VideoDecodeError(self.path, f"decord cannot open it ({exc})") from exc

    def close(self) -> None:
        self._vr = None

    def _decode(self, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        if self._vr is None:
            raise VideoDecodeError(self.path, "reader is closed")
        try:
            return self._read(wanted)
        except VideoDecodeError:
            raise
        except Exception as exc:  # decord's DECORDError is no RuntimeError: a damaged payload ends up here
            raise VideoDecodeError(
                self.path, f"decord cannot decode it ({str(exc).splitlines()[0][:200]})"
            ) from exc

    def _read(self, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        if self.random_access:
            batch = self._vr.get_batch(list(wanted)).asnumpy()
            return dict(zip(wanted, batch))
        vr, want, out = self._open(), set(wanted), {}
        for a in range(0, wanted[-1] + 1, _DECORD_CHUNK):
            chunk = list(range(a, min(a + _DECORD_CHUNK, wanted[-1] + 1)))
            # every chunk is read, kept or not: decord's skip_frames/seek misplace frames on these files
            batch = vr.get_batch(chunk)
            if not want.isdisjoint(chunk):
                batch = batch.asnumpy()
                out.update((i, batch[j]) for j, i in enumerate(chunk) if i in want)
        return out


def _import_torchcodec():
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as exc:  # ImportError, or RuntimeError/OSError when its FFmpeg libraries are missing
        raise BackendUnavailableError(
            f"torchcodec backend selected but it cannot be loaded ({type(exc).__name__}: {exc}); "
            + TORCHCODEC_INSTALL_HINT
        ) from exc
    return VideoDecoder


@functools.cache  # asked on every open by ``auto``: a missing library is searched for once, not per video
def torchcodec_available() -> bool:
    """Whether the torchcodec backend can be used here."""
    try:
        _import_torchcodec()
    except BackendUnavailableError:
        return False
    return True


class TorchCodecReader(VideoReader):
    """torchcodec, exact seek mode (timestamp containers only; :func:`open_video` routes other files to PyAV)."""

    backend = "torchcodec"

    def __init__(self, probe: VideoProbe, threads: int = 1):
        super().__init__(probe, threads)
        video_decoder = _import_torchcodec()
        try:
            self._dec = video_decoder(
                self.path, seek_mode="exact", num_ffmpeg_threads=threads, dimension_order="NHWC", device="cpu"
            )
        except Exception as exc:
            raise VideoDecodeError(self.path, f"torchcodec cannot open it ({exc})") from exc
        self.num_frames = min(len(self._dec), probe.num_frames)
        self.random_access = len(self._dec) == probe.num_frames  # torchcodec counts the frames that decode

    def close(self) -> None:
        self._dec = None

    def _decode(self, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        if self._dec is None:
            raise VideoDecodeError(self.path, "reader is closed")
        batch = self._dec.get_frames_at(list(wanted)).data.numpy()
        return dict(zip(wanted, batch))


def open_video(path: str | os.PathLike, backend: str = "auto", threads: int = 1) -> VideoReader:
    """Opens ``path`` with ``backend`` (``auto``/``pyav``/``decord``/``torchcodec``, or a ``*_GIC`` name).

    Raises :class:`VideoDecodeError` for a missing, unreadable or frame-less file and
    :class:`BackendUnavailableError` when the backend's library is not installed.
    """
    name, _ = parse_backend(backend)
    probe = probe_video(path)
    if name == "auto":
        return _auto_reader(probe, threads)
    if name == "decord":
        if not probe.plain_420:
            logger.info(
                "decord's RGB conversion differs from the ffmpeg CLI on %s %dx%d; decoding %s with PyAV",
                probe.pix_fmt,
                probe.width,
                probe.height,
                probe.path,
            )
            _import_decord()
            return PyAVReader(probe, threads)
        return DecordReader(probe, threads)
    if name == "torchcodec":
        _import_torchcodec()
        if not probe.timestamp_container:
            logger.warning(
                "torchcodec misreads %s containers; decoding %s with PyAV instead",
                probe.container,
                probe.path,
            )
            return PyAVReader(probe, threads)
        if not probe.torchcodec_seek_safe:
            logger.info(
                "torchcodec's seeks misplace frames in %s (edit list, open GOP or undecodable leading "
                "frames); decoding it with PyAV instead",
                probe.path,
            )
            return PyAVReader(probe, threads)
        reader = TorchCodecReader(probe, threads)
        if not reader.random_access:
            logger.info(
                "torchcodec counts %d frames in %s, %d decode; using PyAV",
                len(reader._dec),
                probe.path,
                probe.num_frames,
            )
            reader.close()
            return PyAVReader(probe, threads)
        return reader
    return PyAVReader(probe, threads)


@functools.cache  # asked on every open by ``auto``: a missing library is searched for once, not per video
def decord_available() -> bool:
    """Whether the decord backend can be used here."""
    try:
        _import_decord()
    except BackendUnavailableError:
        return False
    return True


def _auto_reader(probe: VideoProbe, threads: int) -> VideoReader:
    """Random access where it is exact for this file (torchcodec's, else decord's), else PyAV in order."""
    if probe.decord_seek_safe and probe.plain_420:
        for available, random_reader in (
            (torchcodec_available, TorchCodecReader),
            (decord_available, DecordReader),
        ):
            if not available():
                continue
            try:
                reader = random_reader(probe, threads)
            except VideoDecodeError:  # the file does not open: PyAV names the problem
                break
            if reader.random_access:
                return reader
            reader.close()
    return PyAVReader(probe, threads)
