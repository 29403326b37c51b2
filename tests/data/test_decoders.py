"""Decoders: every backend returns the frames plain PyAV sequential decoding gives, on real footage and traps."""

from __future__ import annotations

import pickle

import av
import numpy as np
import pytest
import torch

from nightcrawler.data.decoders import (
    BackendUnavailableError,
    PyAVReader,
    VideoDecodeError,
    open_video,
    parse_backend,
    probe_video,
    torchcodec_available,
)
from nightcrawler.data.sampling import dense_indices, uniform_indices

BACKENDS = ["auto", "pyav", "decord"] + (["torchcodec"] if torchcodec_available() else [])
TRAPS = [
    "h264_open_gop_mp4",
    "mpeg4_bframes_avi",
    "edit_list_mp4",
    "cut_avi",
    "open_gop_cut_mkv",
    "hevc_open_gop_cut_mp4",
]


def index_patterns(n: int) -> dict[str, list[int]]:
    """Reads a loader makes: 3 test views, a dense window, a training draw, reversed with repeats."""
    views = [i for t in range(3) for i in uniform_indices(n, 16, t, 3)]
    return {
        "uniform_3_views": views,
        "dense_late_window": dense_indices(n, 8, 2, view=2, num_views=3),
        "training_draw": uniform_indices(n, 16, rng=__import__("random").Random(3)),
        "reversed_repeats": [n - 1, n - 1, n // 2, 3, 0, n // 2, 1],
    }


def assert_same_frames(got: torch.Tensor, want: np.ndarray, what: str, exact: bool = True) -> None:
    assert got.dtype == torch.uint8 and tuple(got.shape) == want.shape, what
    diff = np.abs(got.numpy().astype(np.int16) - want.astype(np.int16))
    if exact:  # PyAV readers: the very pixels of plain PyAV decoding
        assert diff.max() == 0, f"{what}: max diff {diff.max()}"
    else:  # other libraries bundle their own FFmpeg; their YUV->RGB conversion may round differently
        assert diff.max() <= 2 and diff.mean() < 0.05, (
            f"{what}: max diff {diff.max()}, mean {diff.mean():.3f}"
        )


def test_parse_backend_accepts_original_and_new_names():
    assert parse_backend("decord") == ("decord", False)
    assert parse_backend("decord_GIC") == ("decord", True)
    assert parse_backend("pyav") == ("pyav", False)
    assert parse_backend("pyav_gic") == ("pyav", True)
    assert parse_backend("auto") == ("auto", False)
    assert parse_backend("torchcodec_GIC") == ("torchcodec", True)
    with pytest.raises(ValueError, match="unknown decoding backend 'opencv'.*decord_GIC"):
        parse_backend("opencv")
    assert parse_backend("auto_GIC") == ("auto", True)
    with pytest.raises(ValueError, match="unknown decoding backend 'decord_x'"):
        parse_backend("decord_x")


def test_probe_counts_frames_that_decode(video_files, reference):
    plain = probe_video(video_files["h264_mp4"])
    assert (plain.num_frames, plain.header_frames, plain.fps) == (60, 60, 30.0)
    assert (plain.width, plain.height, plain.codec) == (96, 64, "h264")
    assert plain.keyframes == (0, 12, 24, 36, 48) and plain.decord_seek_safe

    cut = probe_video(video_files["edit_list_mp4"])
    assert cut.header_frames == 24 and cut.edit_list_preroll == 3
    assert cut.num_frames == reference.count(video_files["edit_list_mp4"]) == 21
    assert not cut.decord_seek_safe

    cut_avi = probe_video(video_files["cut_avi"])
    assert cut_avi.num_frames == reference.count(video_files["cut_avi"]) == 24
    assert probe_video(video_files["h264_open_gop_mp4"]).open_gop
    assert not probe_video(video_files["mpeg4_bframes_avi"]).decord_seek_safe


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264_mp4"] + TRAPS)
def test_generated_and_trap_files_give_the_right_frames(video_files, reference, backend, name):
    path = video_files[name]
    n = reference.count(path)
    first_shown = reference.identity(reference.frames(path, [0])[0])
    with open_video(path, backend) as reader:
        assert reader.num_frames == n
        for what, idx in index_patterns(n).items():
            got = reader.frames_at(idx)
            exact = reader.backend == "pyav"
            assert_same_frames(got, reference.frames(path, idx), f"{backend} {name} {what}", exact)
            assert [reference.identity(f) for f in got.numpy()] == [first_shown + i for i in idx]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["ten_bit_420", "odd_size_420"])
def test_rgb_conversion_matches_the_ffmpeg_cli(conversion_files, reference, backend, name):
    path = conversion_files[name]
    n = reference.count(path)
    with open_video(path, backend) as reader:
        assert reader.num_frames == n == 30
        for what, idx in index_patterns(n).items():
            got = reader.frames_at(idx)
            want = reference.frames(path, idx)  # the ffmpeg CLI's rgb24 output
            # PyAV: within 1 level of the CLI; decord and torchcodec bundle their own conversion
            assert_same_frames(got, want, f"{backend} {name} {what}", reader.backend == "pyav")
            assert [reference.identity(f) for f in got.numpy()] == idx


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("degrees", [90, 270])
def test_rotated_files_come_out_rotated_for_display(rotated_files, reference, backend, degrees):
    path = rotated_files[f"rotated_{degrees}"]
    assert probe_video(path).rotation == degrees
    n = reference.count(path)
    with open_video(path, backend) as reader:
        assert reader.num_frames == n == 60 and (reader.height, reader.width) == (96, 64)
        for what, idx in index_patterns(n).items():
            got = reader.frames_at(idx)
            want = reference.frames(path, idx)
            assert want.shape[1:] == (96, 64, 3)
            assert_same_frames(got, want, f"{backend} rotated {degrees} {what}", reader.backend == "pyav")
            upright = [np.rot90(f, -degrees // 90) for f in got.numpy()]  # undo the display rotation
            assert [reference.identity(f) for f in upright] == idx


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", ["bikes", "carphone_pristine"])
def test_real_footage_same_frames_across_backends(real_footage, reference, backend, clip):
    path = real_footage[clip]
    n = reference.count(path)
    with open_video(path, backend) as reader:
        assert reader.num_frames == n
        assert reader.fps == pytest.approx({"bikes": 25.0, "carphone_pristine": 30000 / 1001}[clip])
        for what, idx in index_patterns(n).items():
            want = reference.frames(path, idx)
            assert_same_frames(
                reader.frames_at(idx), want, f"{backend} {clip} {what}", reader.backend == "pyav"
            )


def test_pyav_seeks_to_a_keyframe_and_verifies_by_timestamp(real_footage, reference):
    path = real_footage["bikes"]  # keyframes at 0, 30, 76, 137, 187, 242
    idx = list(range(150, 160)) + [200]
    want = reference.frames(path, idx)
    with open_video(path, "pyav") as reader:
        assert reader.seek_start(150) == 137 and reader.seek_start(20) == 0
        starts = []
        read = reader._read
        reader._read = lambda wanted, start: starts.append(start) or read(wanted, start)
        assert_same_frames(reader.frames_at(idx), want, "seek path")
        assert starts == [137]
        # timestamps that do not map to frames after the seek: decodes again from frame 0, still right
        reader._pts_index = {}
        assert_same_frames(reader.frames_at(idx), want, "fallback path")
        assert starts == [137, 137, 0]


def test_decord_clamps_its_count_and_reads_traps_in_order(video_files, reference):
    import decord

    path = video_files["edit_list_mp4"]
    assert len(decord.VideoReader(str(path))) == 24  # header count; 21 frames really decode
    with open_video(path, "decord") as reader:
        assert reader.num_frames == 21 and not reader.random_access
        want = reference.frames(path, [20, 0, 20])
        assert_same_frames(reader.frames_at([20, 0, 20]), want, "last frame", exact=False)
    with open_video(video_files["h264_mp4"], "decord") as reader:
        assert reader.random_access


def test_threads_and_tensor_indices(video_files, reference):
    path = video_files["h264_mp4"]
    with open_video(path, "pyav", threads=2) as reader:
        got = reader.frames_at(torch.tensor([5, 59, 5]))
    assert_same_frames(got, reference.frames(path, [5, 59, 5]), "2 threads")
    with open_video(path) as reader:
        assert tuple(reader.frames_at([]).shape) == (0, 64, 96, 3)
        with pytest.raises(IndexError, match=r"\[60\] out of range \[0, 60\).*h264.mp4"):
            reader.frames_at([0, 60])


def test_missing_corrupt_and_empty_files_name_the_file(tmp_path, video_files):
    with pytest.raises(VideoDecodeError, match="nope.mp4.*file not found"):
        open_video(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="garbage.mp4.*unreadable"):
        open_video(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video_files["h264_mp4"].read_bytes()[:2000])
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        open_video(truncated, "decord")
    empty = tmp_path / "sound_only.mkv"  # a video stream without a single packet
    with av.open(str(empty), "w") as container:
        video = container.add_stream("mpeg4", rate=30)
        video.width, video.height = 64, 64
        audio = container.add_stream("aac", rate=16000)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        sound.sample_rate = 16000
        container.mux(audio.encode(sound))
        container.mux(audio.encode())
    with pytest.raises(VideoDecodeError, match="sound_only.mkv.*video stream has no frames") as info:
        open_video(empty)
    err = pickle.loads(pickle.dumps(info.value))
    assert (err.path, err.reason) == (str(empty), info.value.reason)


def test_payload_corruption_raises_decode_error(tmp_path, video_files):
    data = bytearray(video_files["mpeg4_bframes_avi"].read_bytes())
    start, stop = int(len(data) * 0.65), len(data) - 2000
    data[start:stop] = bytes(stop - start)  # zero the last frames' payload, keep the index at the end
    broken = tmp_path / "zeroed.avi"
    broken.write_bytes(bytes(data))
    with open_video(broken) as reader:
        assert reader.frames_at([0]).shape[0] == 1
        with pytest.raises(VideoDecodeError, match=r"zeroed.avi.*did not decode"):
            reader.frames_at([reader.num_frames - 1])


@pytest.mark.skipif(torchcodec_available(), reason="torchcodec is installed here")
def test_torchcodec_missing_says_what_to_install(video_files):
    with pytest.raises(BackendUnavailableError, match="pip install torchcodec.*apt-get install ffmpeg"):
        open_video(video_files["h264_mp4"], "torchcodec")


def test_probe_flags_undecodable_leading_frames_of_open_gop_cuts(video_files, reference):
    mkv = probe_video(video_files["open_gop_cut_mkv"])
    assert mkv.uncertain_start and mkv.open_gop and not mkv.decord_seek_safe
    assert mkv.num_frames == len(mkv.frame_pts) == reference.count(video_files["open_gop_cut_mkv"])
    hevc = probe_video(video_files["hevc_open_gop_cut_mp4"])
    assert hevc.edit_list_preroll > 0 and not hevc.torchcodec_seek_safe


def test_decord_hands_10bit_and_odd_size_files_to_pyav(conversion_files, video_files):
    for path in conversion_files.values():
        assert not probe_video(path).plain_420 and isinstance(open_video(path, "decord"), PyAVReader)
    assert open_video(video_files["h264_mp4"], "decord").backend == "decord"


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec not installed")
@pytest.mark.parametrize("name", ["edit_list_mp4", "open_gop_cut_mkv", "hevc_open_gop_cut_mp4"])
def test_torchcodec_hands_unsafe_seek_files_to_pyav(video_files, name):
    assert isinstance(open_video(video_files[name], "torchcodec"), PyAVReader)


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec not installed")
def test_torchcodec_hands_avi_to_pyav(video_files):
    assert isinstance(open_video(video_files["mpeg4_bframes_avi"], "torchcodec"), PyAVReader)
    assert open_video(video_files["h264_mp4"], "torchcodec").backend == "torchcodec"


def test_auto_takes_random_access_only_where_it_is_exact(video_files, conversion_files, real_footage):
    """``auto`` per file: torchcodec's random access (decord's without torchcodec) on seek-safe plain 4:2:0
    files, PyAV in order elsewhere."""
    from nightcrawler.data.decoders import DecordReader, TorchCodecReader

    fast = [video_files["h264_mp4"], *real_footage.values()]
    for path in fast:
        with open_video(path, "auto") as reader:
            if torchcodec_available():
                assert isinstance(reader, TorchCodecReader), path
            else:
                assert isinstance(reader, DecordReader) and reader.random_access, path
    slow = [video_files[n] for n in ("edit_list_mp4", "h264_open_gop_mp4", "mpeg4_bframes_avi", "cut_avi")]
    for path in [*slow, *conversion_files.values()]:
        with open_video(path, "auto") as reader:
            assert isinstance(reader, PyAVReader), path


def test_probes_are_cached_per_file_and_renewed_when_it_changes(video_files, tmp_path):
    import shutil

    path = tmp_path / "v.mp4"
    shutil.copy(video_files["h264_mp4"], path)
    first = probe_video(path)
    assert probe_video(path) is first  # the same file: no second demux
    shutil.copy(video_files["edit_list_mp4"], path)  # replaced: another size and time
    assert probe_video(path) is not first and probe_video(path).num_frames == 21
