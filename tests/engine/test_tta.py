"""TTA settings: parsing, which clips of a decoded setting a smaller one reuses, pass planning, aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nightcrawler.engine.tta import (
    TTASetting,
    aggregate_clips,
    parse_tta_setting,
    plan_passes,
    spatial_crop_map,
    subset_clip_indices,
    temporal_view_map,
)


def sparse_test_indices(length: int, views: int, view: int, t: int = 8) -> list[int]:
    """Spec §2.1 test-mode sparse sampling, written out independently of nightcrawler.data."""
    seg = (length - 1) / t
    d = seg / (views + 1)
    return [int(np.round(seg * i)) + int(d * (view + 1)) for i in range(t)]


def dense_offset_indices(length: int, views: int, view: int, t: int = 8, rate: int = 2) -> list[int]:
    """Spec §2.2 dense sampling with USE_OFFSET_SAMPLING."""
    clip = rate * t
    delta = max(length - clip, 0)
    a = delta // 2 if views == 1 else view * (delta // (views - 1))
    return [int(min(max(x, 0), length - 1)) for x in np.linspace(a, a + clip - 1, t)]


def test_parse_settings():
    assert parse_tta_setting("1x3", 0.25) == TTASetting(1, 3, 0.25)
    assert parse_tta_setting(" 3X1 ", None) == TTASetting(3, 1, None)
    assert parse_tta_setting("3x3@g0.45", 0.25) == TTASetting(3, 3, 0.45)
    assert parse_tta_setting("1x1@gnone", 0.25) == TTASetting(1, 1, None)
    assert parse_tta_setting("1x1@g1", 0.25) == TTASetting(1, 1, None)  # identity correction
    assert TTASetting(10, 3, 0.25).label() == "10x3@g0.25" and TTASetting(1, 1, None).label() == "1x1@gnone"
    # enhancement specs after @, any registered enhancement
    assert parse_tta_setting("3x3@gamma:value=0.45", 0.25) == TTASetting(3, 3, 0.45)
    assert parse_tta_setting("1x1@none", 0.25) == TTASetting(1, 1, None)
    for bad, msg in [
        ("3by3", "not of the form"),
        ("3x2", "1 or 3 spatial crops"),
        ("0x1", "at least one"),
        ("1x1@g-1", "positive"),
        ("1x1@sharpen", "unknown enhancement"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_tta_setting(bad, 0.25)


def test_middle_view_of_three_is_the_single_view():
    assert temporal_view_map(3, 1, sparse_test_indices) == [1]
    assert temporal_view_map(3, 3, sparse_test_indices) == [0, 1, 2]
    assert temporal_view_map(1, 3, sparse_test_indices) is None  # 3 views are not inside 1
    assert temporal_view_map(10, 1, sparse_test_indices) is None  # no view of 10 sits at the middle
    assert temporal_view_map(5, 1, sparse_test_indices) == [2]
    assert temporal_view_map(3, 1, dense_offset_indices) == [1]


def test_crop_and_clip_subsets():
    assert (
        spatial_crop_map(3, 1) == [1]
        and spatial_crop_map(1, 3) is None
        and spatial_crop_map(3, 3) == [0, 1, 2]
    )
    g = 0.25
    assert subset_clip_indices(3, 3, TTASetting(1, 3, g), sparse_test_indices) == [3, 4, 5]
    assert subset_clip_indices(3, 3, TTASetting(3, 1, g), sparse_test_indices) == [1, 4, 7]
    assert subset_clip_indices(3, 3, TTASetting(1, 1, 0.45), sparse_test_indices) == [4]
    assert subset_clip_indices(1, 3, TTASetting(3, 1, g), sparse_test_indices) is None


def test_plan_passes_folds_subsets_and_enhancements_into_one_decode():
    g = 0.25
    settings = [
        TTASetting(1, 3, g),
        TTASetting(3, 3, g),
        TTASetting(1, 1, g),
        TTASetting(3, 3, 0.5),
        TTASetting(1, 3, g),  # duplicate
        TTASetting(2, 1, None),  # views of 2 are not views of 3
    ]
    passes = plan_passes(settings, sparse_test_indices)
    specs = [(p.views, p.crops, [e.spec for e in p.enhancements]) for p in passes]
    assert specs == [(3, 3, ["gamma:value=0.25", "gamma:value=0.5"]), (2, 1, ["none"])]
    assert passes[0].outputs == [
        (TTASetting(3, 3, g), list(range(9))),
        (TTASetting(3, 3, 0.5), list(range(9, 18))),
        (TTASetting(1, 3, g), [3, 4, 5]),
        (TTASetting(1, 1, g), [4]),
    ]
    assert passes[0].needed_columns() == list(range(18)) and passes[0].label() == "3x3@g0.25/g0.5"
    only_small = plan_passes([TTASetting(1, 1, g), TTASetting(3, 3, 0.5)], sparse_test_indices)
    assert [e.spec for e in only_small[0].enhancements] == ["gamma:value=0.5", "gamma:value=0.25"]
    assert only_small[0].needed_columns() == [*range(9), 13]


def test_aggregation_matches_the_original_meter():
    x = torch.tensor([[[1.0, -2.0], [0.5, -1.0], [-3.0, -0.5]]])  # 1 video, 3 clips, 2 classes
    torch.testing.assert_close(aggregate_clips(x, "sum"), torch.tensor([[-1.5, -3.5]]))
    torch.testing.assert_close(aggregate_clips(x, "mean"), torch.tensor([[-0.5, -3.5 / 3]]))
    # the original's max starts from a zero tensor, so negative outputs are floored at 0
    torch.testing.assert_close(aggregate_clips(x, "max"), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="ENSEMBLE_METHOD"):
        aggregate_clips(x, "median")
    assert not math.isnan(float(aggregate_clips(x[:, :1], "sum").sum()))
