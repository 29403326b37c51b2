"""nightcrawler.data.check on a folder of generated good and bad files, and the tester's pre-flight / strict mode
listing every bad video in one failure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from nightcrawler.data.check import BadVideosError, check_videos, read_report, write_report
from nightcrawler.engine import test as tester
from nightcrawler.utils.errors import exit_code_for
from tests.data.conftest import write_pattern_video
from tests.engine.test_tester import (
    CROP,
    FRAMES,
    NUM_CLASSES,
    csv_rows,
    data_root,
    make_cfg,
    read_pkl,
    weights,
)

__all__ = ["data_root", "weights"]  # fixtures of the tester's tests, used here

EXPECTED = {
    "good.mp4": "ok",
    "gone.mp4": "missing",
    "empty.mp4": "empty",
    "garbage.mp4": "unreadable",
    "audio.m4a": "unreadable",
    "truncated.mp4": "unreadable",
    "zeroed.mp4": "undecodable",
}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check")
    good = write_pattern_video(root / "good.mp4", "libx264", {"g": "12"}, frames=40)
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    # payload zeroed from the middle of mdat to the index (moov, at the end): demuxes, the last frames fail
    moov, mdat = data.rfind(b"moov") - 4, data.find(b"mdat")
    start = mdat + (moov - mdat) // 2
    (root / "zeroed.mp4").write_bytes(data[:start] + b"\0" * (moov - start) + data[moov:])
    with av.open(str(root / "audio.m4a"), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for _ in range(4):
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    (root / "list.csv").write_text("".join(f"{n},-1\n" for n in EXPECTED))
    return root


def test_every_bad_file_gets_its_kind_in_list_order(bad_folder, tmp_path):
    names = list(EXPECTED)
    records = check_videos([bad_folder / n for n in names], names, workers=3, progress=False)
    assert [r.name for r in records] == names
    got = {r.name: r.kind for r in records}
    assert got == EXPECTED, {r.name: (r.kind, r.reason) for r in records}
    assert all(r.reason for r in records if not r.ok)
    back = read_report(write_report(records, tmp_path / "r.csv"))
    assert back == records
    err = BadVideosError([r for r in records if not r.ok], tmp_path / "r.csv")
    for n, kind in EXPECTED.items():
        assert (n in str(err)) == (kind != "ok")


def test_fewer_frames_than_the_minimum_is_short(bad_folder):
    [rec] = check_videos([bad_folder / "good.mp4"], min_frames=41, workers=1, progress=False)
    assert (rec.kind, rec.frames, rec.header_frames) == ("short", 40, 40)
    assert "40 frame(s) decode, at least 41 needed" in rec.reason
    [rec] = check_videos([bad_folder / "good.mp4"], min_frames=40, workers=1, progress=False)
    assert rec.ok


def test_header_promising_far_more_frames_than_decode_is_short(bad_folder, monkeypatch):
    from nightcrawler.data import check

    real = check.probe_video
    monkeypatch.setattr(check, "probe_video", lambda p: dataclasses.replace(real(p), header_frames=81))
    rec = check.check_video(bad_folder / "good.mp4")
    assert rec.kind == "short" and rec.reason == "the header counts 81 frames but only 40 decode"
    monkeypatch.setattr(check, "probe_video", lambda p: dataclasses.replace(real(p), header_frames=80))
    assert check.check_video(bad_folder / "good.mp4").ok  # at most twice: a cut's header, still fine


def arid_with_bad_videos(data_root: Path, bad_folder: Path, root: Path) -> tuple[list[str], list[str]]:
    """An ARID list of 3 good videos with the bad files of ``bad_folder`` between them; (good, bad) names."""
    clips = root / "ARID_v1.5/clips_v1.5"
    good = [name for name, _ in csv_rows(data_root / "arid.csv")[:3]]
    for name in good:
        (clips / name).parent.mkdir(parents=True, exist_ok=True)
        (clips / name).write_bytes((data_root / "ARID_v1.5/clips_v1.5" / name).read_bytes())
    bad = [f"Drink/{n}" for n, kind in EXPECTED.items() if kind != "ok"]
    for name in bad:
        if (bad_folder / Path(name).name).exists():
            (clips / name).write_bytes((bad_folder / Path(name).name).read_bytes())
    order = [good[0], *bad[:3], good[1], *bad[3:], good[2]]
    (root / "arid.csv").write_text("".join(f"{n},0\n" for n in order))
    return good, bad


def test_tester_preflight_fails_once_listing_every_bad_video_then_skips_them(
    data_root, weights, bad_folder, tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    good, bad = arid_with_bad_videos(data_root, bad_folder, tmp_path / "data")
    base = ("TEST.CHECKPOINT_FILE_PATH", str(weights), "DATA.DECODE_RETRIES", 1, "TEST.CHECK_VIDEOS", "true")
    built = []
    real_build = tester.build_test_model
    monkeypatch.setattr(tester, "build_test_model", lambda cfg: built.append(1) or real_build(cfg))
    out = tmp_path / "strict"
    with pytest.raises(BadVideosError) as info:
        tester.test(make_cfg(tmp_path / "data", out, *base))
    assert not built  # failed before any model work
    message = str(info.value)
    assert all(name in message for name in bad) and not any(name in message for name in good)
    assert f"{len(bad)} bad video(s)" in message and str(out / "arid_check.csv") in message
    assert sorted(r.name for r in info.value.records) == sorted(bad)
    assert exit_code_for(info.value) == 3
    report = {r.name: r.kind for r in read_report(out / "arid_check.csv")}
    assert report == {
        **{n: "ok" for n in good},
        **{f"Drink/{n}": k for n, k in EXPECTED.items() if k != "ok"},
    }
    # skip mode: the bad ones (the zeroed file too, whose sampled frames would decode) are left out and listed
    out = tmp_path / "skip"
    [result] = tester.test(make_cfg(tmp_path / "data", out, *base, "TEST.SKIP_BAD_VIDEOS", True))
    assert result.video_names == good
    assert (out / f"aridx{FRAMES}x{CROP}x1x1_skipped.txt").read_text().splitlines() == bad
    assert read_pkl(result.pkl_path)["video_preds"].shape == (3, NUM_CLASSES)


def test_strict_mode_without_preflight_collects_every_failure(data_root, weights, bad_folder, tmp_path):
    torch.set_num_threads(1)
    good, bad = arid_with_bad_videos(data_root, bad_folder, tmp_path / "data")
    present = [n for n in bad if not n.endswith("gone.mp4")]
    (tmp_path / "data/arid.csv").write_text("".join(f"{n},0\n" for n in [*good, *present]))
    cfg = make_cfg(tmp_path / "data", tmp_path / "out", "TEST.CHECKPOINT_FILE_PATH", str(weights),
                   "DATA.DECODE_RETRIES", 1, "TEST.CHECK_VIDEOS", "auto")  # fmt: skip
    with pytest.raises(BadVideosError) as info:
        tester.test(cfg)
    failed = sorted(r.name for r in info.value.records)
    # every file that fails in the pass (the zeroed one too, on these sampled frames) is listed in one error
    assert failed == sorted(present)
    assert all(r.kind == "undecodable" for r in info.value.records)
    assert not (tmp_path / "out/arid_check.csv").exists()  # auto: 8 videos is below the pre-flight threshold
