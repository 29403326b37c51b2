"""Temporal sampling against the original's golden vectors and the spec's §2.4 tables."""

from __future__ import annotations

import json
import random

import pytest

from nightcrawler.data.sampling import dense_indices, dense_start, uniform_indices, uniform_ranges


def load_cases(golden_dir, name):
    return json.loads((golden_dir / "sampling" / name).read_text())["cases"]


def test_sparse_test_views_match_golden(golden_dir):
    cases = load_cases(golden_dir, "sparse_test.json")
    assert len(cases) > 300
    for c in cases:
        got = uniform_indices(c["video_length"], c["num_frames"], c["view_index"], c["num_ensemble_views"])
        assert got == c["indices"], c


def test_sparse_training_ranges_and_seeded_draws_match_golden(golden_dir):
    for c in load_cases(golden_dir, "sparse_train.json"):
        assert [list(r) for r in uniform_ranges(c["video_length"], c["num_frames"])] == c["segment_ranges"]
        for draw in c["seeded_draws"]:
            got = uniform_indices(c["video_length"], c["num_frames"], rng=random.Random(draw["seed"]))
            assert got == draw["indices"], (c["video_length"], c["num_frames"], draw["seed"])


def test_dense_test_views_match_golden(golden_dir):
    cases = load_cases(golden_dir, "dense_test.json")
    assert any(c["float64_linspace_differs"] for c in cases)  # the float32 linspace case is covered
    for c in cases:
        args = (
            c["video_length"],
            c["num_frames"],
            c["sampling_rate"],
            c["view_index"],
            c["num_ensemble_views"],
        )
        assert dense_indices(*args, use_offset=c["use_offset"]) == c["indices"], c
        start = dense_start(c["video_length"], c["clip_size"], *args[3:], use_offset=c["use_offset"])
        assert start == c["start_idx"]


def test_dense_training_draws_match_golden(golden_dir):
    for c in load_cases(golden_dir, "dense_train.json"):
        rng = random.Random(c["seed"])
        got = dense_indices(
            c["video_length"], c["num_frames"], c["sampling_rate"], use_offset=c["use_offset"], rng=rng
        )
        assert got == c["indices"], c
        assert (
            dense_start(c["video_length"], c["clip_size"], rng=random.Random(c["seed"])) == c["drawn_start"]
        )


def steps(start, stop, step=1):
    return list(range(start, stop + 1, step))


# fmt: off
SPARSE_TABLE = [  # spec §2.4, T = 32: (L, V, t, indices)
    (1, 3, 2, [0] * 32),
    (10, 1, 0, [0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 8, 8, 8, 8, 9]),
    (32, 3, 1, steps(0, 16) + steps(16, 30)),
    (33, 3, 2, steps(0, 31)),
    (64, 1, 0, steps(0, 32, 2) + steps(33, 61, 2)),
    (64, 3, 1, steps(0, 32, 2) + steps(33, 61, 2)),
    (64, 3, 2, steps(1, 33, 2) + steps(34, 62, 2)),
    (100, 1, 0, [1, 4, 7, 10, 13, 16, 20, 23, 26, 29, 32, 35, 38, 41, 44, 47, 51, 54, 57, 60, 63, 66, 69, 72, 75, 78, 81, 85, 88, 91, 94, 97]),
    (100, 3, 0, [0, 3, 6, 9, 12, 15, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46, 50, 53, 56, 59, 62, 65, 68, 71, 74, 77, 80, 84, 87, 90, 93, 96]),
    (300, 1, 0, [4, 13, 23, 32, 41, 51, 60, 69, 79, 88, 97, 107, 116, 125, 135, 144, 154, 163, 172, 182, 191, 200, 210, 219, 228, 238, 247, 256, 266, 275, 284, 294]),
    (300, 3, 2, [7, 16, 26, 35, 44, 54, 63, 72, 82, 91, 100, 110, 119, 128, 138, 147, 157, 166, 175, 185, 194, 203, 213, 222, 231, 241, 250, 259, 269, 278, 287, 297]),
]
# fmt: on


@pytest.mark.parametrize("length,views,view,expected", SPARSE_TABLE)
def test_sparse_spec_table(length, views, view, expected):
    assert uniform_indices(length, 32, view, views) == expected


DENSE_TABLE = [  # spec §2.4, T = 32, rate 2, offset sampling on
    (40, 3, 0, steps(0, 38, 2) + [39] * 12),
    (64, 1, 0, steps(0, 60, 2) + [63]),
    (100, 1, 0, steps(18, 78, 2) + [81]),
    (100, 3, 1, steps(18, 78, 2) + [81]),
    (100, 3, 0, steps(0, 60, 2) + [63]),
    (100, 3, 2, steps(36, 96, 2) + [99]),
    (200, 1, 0, steps(68, 128, 2) + [131]),
]


@pytest.mark.parametrize("length,views,view,expected", DENSE_TABLE)
def test_dense_spec_table(length, views, view, expected):
    assert dense_indices(length, 32, 2, view, views) == expected


def test_training_ranges_spec_examples_and_draws_stay_inside():
    assert uniform_ranges(100, 32)[:6] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 19)]
    assert uniform_ranges(100, 32)[-2:] == [(93, 96), (96, 99)]
    assert uniform_ranges(10, 32)[:6] == [(0, 0), (0, 1), (1, 1), (1, 1), (1, 1), (1, 2)]
    assert uniform_ranges(300, 32)[:3] == [(0, 9), (9, 19), (19, 28)]
    rng = random.Random(7)
    for length in (1, 2, 31, 150):
        ranges = uniform_ranges(length, 32)
        for _ in range(20):
            draw = uniform_indices(length, 32, rng=rng)
            assert all(a <= i <= b for i, (a, b) in zip(draw, ranges))
            assert draw == sorted(draw) and draw[-1] <= length - 1


def test_training_uses_the_random_module_by_default():
    random.seed(11)
    expected = uniform_indices(90, 16, rng=random.Random(11))
    assert uniform_indices(90, 16) == expected
    random.seed(5)
    assert dense_indices(300, 32, 2) == dense_indices(300, 32, 2, rng=random.Random(5))


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least 1 frame.*num_video_frames=0"):
        uniform_indices(0, 32, 0, 1)
    with pytest.raises(ValueError, match=r"view must be in \[0, 3\), got 3"):
        uniform_indices(50, 32, 3, 3)
    with pytest.raises(ValueError, match="sampling_rate must be >= 1"):
        dense_indices(50, 32, 0, 0)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        uniform_ranges(50, 0)


def test_frame_controls_permute_or_freeze_a_clip():
    from nightcrawler.data.sampling import FRAME_CONTROLS, control_frames, time_permutation

    clip = [0, 3, 6, 9, 12, 15, 18, 21]
    assert control_frames(clip, "") == clip
    assert control_frames(clip, "one_frame") == [12] * 8  # the middle sampled frame, T times
    assert control_frames([4], "one_frame") == [4] and control_frames([4], "shuffle", 7) == [4]
    shuffled = control_frames(clip, "shuffle", "0:5")
    assert sorted(shuffled) == clip and shuffled != clip
    assert shuffled == control_frames(clip, "shuffle", "0:5")  # deterministic per seed
    assert [clip[i] for i in time_permutation(8, "0:5")] == shuffled
    # never the identity, whatever the seed (two frames: the only other order)
    assert all(time_permutation(2, s) == [1, 0] for s in range(20))
    assert all(time_permutation(3, s) != [0, 1, 2] for s in range(50))
    assert len({tuple(time_permutation(8, f"0:{i}")) for i in range(10)}) > 5  # videos differ
    assert set(FRAME_CONTROLS) == {"", "shuffle", "one_frame"}
    with pytest.raises(ValueError, match="frame control.*'reverse'"):
        control_frames(clip, "reverse")
