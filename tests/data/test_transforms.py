"""Transforms: gamma/normalise look-ups, test resize + crops (golden), clip-consistent training augmentation."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from nightcrawler.data.sampling import dense_indices, uniform_indices
from nightcrawler.data.transforms import (
    ClipRandAugment,
    TrainTransform,
    apply_gamma,
    crop_boxes,
    gamma_lut,
    gamma_normalize_lut,
    normalize,
    random_resized_crop_box,
    resize_short_side,
    short_side_size,
    slowfast_pathways,
    spatial_crops,
    test_views,
)

MEAN, STD = [0.45] * 3, [0.225] * 3


def random_frames(t, h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8))


def original_test_clips(frames, crop, num_crops, gamma):
    """The original's per-clip recipe: float gamma per frame, normalise, permute, resize (contiguous), crop."""
    if gamma is not None:
        frames = torch.stack([TF.adjust_gamma(f.permute(2, 0, 1), gamma).permute(1, 2, 0) for f in frames])
    x = ((frames.float() / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)).permute(3, 0, 1, 2).contiguous()
    h, w = x.shape[-2:]
    if not ((w <= h and w == crop) or (h <= w and h == crop)):
        size = (int(math.floor(h / w * crop)), crop) if w < h else (crop, int(math.floor(w / h * crop)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    out = []
    for s in [1] if num_crops == 1 else range(num_crops):
        y, xo = math.ceil((h - crop) / 2), math.ceil((w - crop) / 2)
        if h > w:
            y = {0: 0, 1: y, 2: h - crop}[s]
        else:
            xo = {0: 0, 1: xo, 2: w - crop}[s]
        out.append(x[:, :, y : y + crop, xo : xo + crop])
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------- look-ups


def test_gamma_lut_is_torchvision_adjust_gamma(golden_dir):
    golden = json.loads((golden_dir / "gamma" / "gamma_lut.json").read_text())
    assert gamma_lut(0.25).tolist() == golden["cases"][0]["lut"]
    spec = {
        0: 0,
        1: 64,
        2: 76,
        5: 95,
        10: 113,
        20: 135,
        50: 170,
        100: 202,
        128: 215,
        200: 240,
        254: 255,
        255: 255,
    }
    assert {v: int(gamma_lut(0.25)[v]) for v in spec} == spec
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 256)
    for gamma in (0.45, 2.5, 1.0):
        assert torch.equal(gamma_lut(gamma), TF.adjust_gamma(values, gamma).view(256))
    assert torch.equal(gamma_lut(None), torch.arange(256, dtype=torch.uint8))
    with pytest.raises(ValueError, match="gamma must be a positive"):
        gamma_lut(0)


def test_gamma_normalize_lut_matches_golden_bit_for_bit(golden_dir):
    norm = json.loads((golden_dir / "gamma" / "gamma_lut.json").read_text())["normalisation"]
    lut = gamma_normalize_lut(0.25, MEAN, STD)
    assert lut.dtype == torch.float32 and tuple(lut.shape) == (256, 3)
    assert lut[:, 2].tolist() == norm["normalised_values_after_gamma_0_25"]
    assert gamma_normalize_lut(None)[:, 0].tolist() == norm["normalised_values_without_gamma"]


def test_normalize_equals_float_recipe_per_channel():
    frames = random_frames(3, 5, 7)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    expected = (frames.float() / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.equal(normalize(frames, None, mean, std), expected)
    gamma_frames = torch.stack([TF.adjust_gamma(f.permute(2, 0, 1), 0.25).permute(1, 2, 0) for f in frames])
    assert torch.equal(apply_gamma(frames, 0.25), gamma_frames)
    assert apply_gamma(frames, None) is frames
    assert torch.equal(normalize(frames, 0.25), (gamma_frames.float() / 255.0 - 0.45) / 0.225)
    for m, sd in ((mean, std), (MEAN, STD)):  # per-channel and shared tables, planar output
        planar = normalize(frames, 0.25, m, sd, channels_first=True)
        assert planar.is_contiguous() and torch.equal(
            planar, normalize(frames, 0.25, m, sd).permute(3, 0, 1, 2)
        )
    with pytest.raises(ValueError, match=r"uint8 frames of shape \(T, H, W, 3\), got torch.float32"):
        normalize(frames.float())


# ----------------------------------------------------------------------------------------------- test path


def test_resize_and_crops_match_golden_coordinate_ramps(golden_dir):
    cases = json.loads((golden_dir / "spatial" / "crops.json").read_text())["cases"]
    resized_cache = {}
    for c in cases:
        h, w, size = c["input_h"], c["input_w"], c["crop_size"]
        assert short_side_size(h, w, size) == (c["resized_h"], c["resized_w"])
        rh, rw = c["resized_h"], c["resized_w"]
        boxes = crop_boxes(rh, rw, size, c["num_spatial_crops"])
        box = boxes[c["spatial_idx"]] if c["num_spatial_crops"] == 3 else boxes[0]
        assert list(box) == c["box_yxhw_in_resized"]
        if (h, w, size) not in resized_cache:
            ramps = torch.stack(
                [
                    torch.arange(w, dtype=torch.float32).expand(2, h, w),
                    torch.arange(h, dtype=torch.float32).view(h, 1).expand(2, h, w),
                    torch.zeros(2, h, w),
                ],
                dim=-1,
            )  # (T, H, W, 3): channel 0 = column, channel 1 = row
            resized_cache[h, w, size] = resize_short_side(ramps.permute(3, 0, 1, 2).contiguous(), size)
        resized = resized_cache[h, w, size]  # (C, T, H, W)
        assert tuple(resized.shape[-2:]) == (rh, rw)
        assert c["resize_skipped"] == ((rh, rw) == (h, w))
        crops = spatial_crops(resized, size, c["num_spatial_crops"])
        out = crops[c["spatial_idx"] if c["num_spatial_crops"] == 3 else 0]
        assert list(out.shape) == c["out_shape"]
        np.testing.assert_allclose(out[0, 0, 0].numpy(), c["src_x_at_output_cols"], atol=2e-6)
        np.testing.assert_allclose(out[1, 0, :, 0].numpy(), c["src_y_at_output_rows"], atol=2e-6)


def test_resize_of_random_images_matches_golden(golden_dir):
    arrays = np.load(golden_dir / "spatial" / "random_images.npz")
    cases = json.loads((golden_dir / "spatial" / "random_images.json").read_text())["cases"]
    for c in cases:
        clip = torch.from_numpy(arrays[c["input_key"]])  # (C, T, H, W) as the original held it
        crops = spatial_crops(resize_short_side(clip, c["crop_size"]), c["crop_size"], 3)
        # any memory layout resizes alike, e.g. a channels-last (T, C, H, W) view
        channels_last = clip.permute(1, 2, 3, 0).contiguous().permute(0, 3, 1, 2)
        other = resize_short_side(channels_last, c["crop_size"]).transpose(0, 1)
        boxes = crop_boxes(*other.shape[-2:], c["crop_size"], 3)
        for k, key in c["output_keys"].items():
            np.testing.assert_allclose(crops[int(k)].numpy(), arrays[key], rtol=0, atol=1e-6)
            y, x, h, w = boxes[int(k)]
            np.testing.assert_allclose(
                other[..., y : y + h, x : x + w].numpy(), arrays[key], rtol=0, atol=1e-6
            )


def test_test_views_reproduce_the_original_dataset_end_to_end(golden_dir):
    """Fake constant videos through sampling + gamma + normalise + resize + crop, as the original's dataset."""
    cases = json.loads((golden_dir / "sampling" / "test_clips_end_to_end.json").read_text())["cases"]
    checked, views_cache = 0, {}
    for case in cases:
        views, crops = case["num_ensemble_views"], case["num_spatial_crops"]
        dense = case["dataset"].startswith("Ug2 (dense")
        for clip in case["clips"]:
            w = clip["clip_index"] % (views * crops)
            length = clip["video_length"]
            if dense:
                idx = dense_indices(length, 32, 2, w // crops, views)
            else:
                idx = uniform_indices(length, 32, w // crops, views)
            assert idx == clip["frames_requested"]
            key = (tuple(idx), clip["input_h"], clip["input_w"], crops)
            if key not in views_cache:  # the crops of one view share one call, as in the new loader
                values = torch.tensor([(3 * i + 5) % 256 for i in idx], dtype=torch.uint8)
                frames = values.view(-1, 1, 1, 1).expand(-1, clip["input_h"], clip["input_w"], 3)
                views_cache[key] = test_views(frames, 224, crops, 0.25, MEAN, STD)
            out = views_cache[key][w % crops]
            assert list(out.shape) == clip["output_shape_CTHW"]
            means = out[0].mean(dim=(1, 2)).numpy()
            np.testing.assert_allclose(means, clip["value_per_output_frame"], atol=1e-5)
            checked += 1
    assert checked == 52


@pytest.mark.parametrize("h,w,crop", [(48, 64, 32), (64, 48, 32), (40, 40, 24), (32, 45, 32), (30, 30, 30)])
@pytest.mark.parametrize("num_crops", [1, 3])
def test_test_views_equal_the_original_recipe(h, w, crop, num_crops):
    frames = random_frames(4, h, w, seed=h * w)
    got = test_views(frames, crop, num_crops, 0.25, MEAN, STD)
    assert got.dtype == torch.float32 and tuple(got.shape) == (num_crops, 3, 4, crop, crop)
    assert got.is_contiguous()
    torch.testing.assert_close(got, original_test_clips(frames, crop, num_crops, 0.25), rtol=0, atol=1e-5)
    batch = torch.full((num_crops + 2, 3, 4, crop, crop), float("nan"))
    test_views(frames, crop, num_crops, 0.25, MEAN, STD, out=batch[1 : num_crops + 1])
    assert torch.equal(batch[1 : num_crops + 1], got) and batch[[0, -1]].isnan().all()


def test_crop_boxes_orientation_rules():
    assert crop_boxes(224, 298, 224, 3) == [(0, 0, 224, 224), (0, 37, 224, 224), (0, 74, 224, 224)]
    assert crop_boxes(298, 224, 224, 3) == [(0, 0, 224, 224), (37, 0, 224, 224), (74, 0, 224, 224)]
    assert crop_boxes(230, 230, 224, 3) == [(3, 0, 224, 224), (3, 3, 224, 224), (3, 6, 224, 224)]
    assert crop_boxes(224, 298, 224, 1) == [(0, 37, 224, 224)]
    with pytest.raises(ValueError, match="num_crops must be 1, 2 or 3"):
        crop_boxes(224, 298, 224, 4)
    with pytest.raises(ValueError, match="exceeds the image size 200x298"):
        crop_boxes(200, 298, 224, 1)


# ----------------------------------------------------------------------------------------------- training path


def test_clip_rand_augment_applies_identical_ops_to_every_frame():
    cols, rows = np.meshgrid(np.arange(48) * 5, np.arange(40) * 6, indexing="xy")
    frame = torch.from_numpy(np.stack([cols, rows, np.full((40, 48), 90)], -1).astype(np.uint8))
    clip = frame.expand(6, -1, -1, -1).contiguous()
    ra = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", "bicubic")
    random.seed(123)
    np.random.seed(123)
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    outputs = [ra(clip, random.Random(seed)) for seed in range(8)]
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state)
    for out in outputs:
        assert out.dtype == torch.uint8 and out.shape == clip.shape
        assert all(torch.equal(out[0], out[t]) for t in range(1, 6))
    assert sum(not torch.equal(out, clip) for out in outputs) >= 5  # the ops do act
    assert len({out.numpy().tobytes() for out in outputs}) >= 5  # and differ between clips


def test_train_transform_is_clip_consistent_without_erasing():
    frames = random_frames(1, 60, 80, seed=3).expand(5, -1, -1, -1).contiguous()
    transform = TrainTransform(32, re_prob=0.0)
    for seed in range(6):
        out = transform(frames, random.Random(seed))
        assert out.dtype == torch.float32 and tuple(out.shape) == (3, 5, 32, 32)
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 5))


def test_train_transform_without_random_ops_is_crop_resize_normalise():
    frames = random_frames(3, 60, 80, seed=4)
    transform = TrainTransform(
        32, rand_augment=None, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), flip_prob=0.0, re_prob=0.0
    )
    got = transform(frames, random.Random(0))
    x = ((frames.float() / 255.0 - 0.45) / 0.225).permute(3, 0, 1, 2).contiguous()
    want = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    flipped = TrainTransform(
        32, rand_augment=None, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), flip_prob=1.0, re_prob=0.0
    )
    torch.testing.assert_close(flipped(frames, random.Random(0)), want.flip(-1), rtol=0, atol=1e-5)


def test_random_erasing_cuts_the_same_box_through_all_frames():
    frames = random_frames(4, 50, 50, seed=5)
    plain = TrainTransform(40, rand_augment=None, re_prob=0.0)(frames, random.Random(9))
    random.seed(0)
    torch.manual_seed(0)
    erased = TrainTransform(40, rand_augment=None, re_prob=1.0)(frames, random.Random(9))
    changed = erased != plain
    mask = changed[0, 0]
    assert mask.any() and not mask.all()
    ys, xs = torch.nonzero(mask, as_tuple=True)
    box = torch.zeros_like(mask)
    box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    assert torch.equal(mask, box)  # one rectangle ...
    # ... through every frame and channel
    assert all(torch.equal(changed[c, t], mask) for c in range(3) for t in range(4))
    noise = erased[:, :, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    assert not torch.equal(noise[:, 0], noise[:, 1])  # filled with fresh N(0, 1) values per frame
    assert abs(float(noise.mean())) < 0.3 and 0.7 < float(noise.std()) < 1.3


def test_random_resized_crop_box_formula_and_fallback():
    rng = random.Random(0)
    for _ in range(200):
        y, x, h, w = random_resized_crop_box(240, 320, (0.08, 1.0), (0.75, 1.3333), rng)
        assert 0 < h <= 240 and 0 < w <= 320 and 0 <= y <= 240 - h and 0 <= x <= 320 - w
        assert 0.08 * 0.75 - 0.02 <= h * w / (240 * 320) <= 1.0
    # replay the formula: area fraction, log-uniform aspect, rounded sides, inclusive uniform corner
    for seed in range(100):
        check = random.Random(seed)
        area = 240 * 320 * check.uniform(0.08, 1.0)
        aspect = math.exp(check.uniform(math.log(0.75), math.log(1.3333)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if w <= 320 and h <= 240:
            break
    rng = random.Random(seed)
    assert random_resized_crop_box(240, 320, (0.08, 1.0), (0.75, 1.3333), rng) == (
        check.randint(0, 240 - h),
        check.randint(0, 320 - w),
        h,
        w,
    )
    # areas larger than the image never fit: centred fallback with the aspect clamped to the range
    wide = random_resized_crop_box(100, 300, (2.0, 3.0), (0.75, 1.3333), random.Random(1))
    tall = random_resized_crop_box(300, 100, (2.0, 3.0), (0.75, 1.3333), random.Random(1))
    assert wide == (0, 83, 100, 133) and tall == (83, 0, 133, 100)


def test_short_side_jitter_path_and_bad_configs():
    transform = TrainTransform(24, rand_augment=None, scale=None, jitter_scales=(30, 40), re_prob=0.0)
    out = transform(random_frames(2, 60, 90, seed=6), random.Random(0))
    assert tuple(out.shape) == (3, 2, 24, 24)
    with pytest.raises(ValueError, match="needs scale/ratio"):
        TrainTransform(24, scale=None, jitter_scales=None)
    with pytest.raises(ValueError, match="must not be below crop_size"):
        TrainTransform(224, scale=None, jitter_scales=(200, 320))


def test_slowfast_pathways_take_linspace_frames():
    clip = torch.arange(32, dtype=torch.float32).view(1, 32, 1, 1).expand(3, 32, 2, 2)
    slow, fast = slowfast_pathways(clip, 8)
    assert slow[0, :, 0, 0].tolist() == [0, 10, 20, 31]
    assert fast is clip
    with pytest.raises(ValueError, match="alpha must be in"):
        slowfast_pathways(clip, 64)
