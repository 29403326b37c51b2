"""Mixup / CutMix on (N, C, T, H, W) clips: the box cuts H and W on every frame, never T."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nightcrawler.config import get_cfg
from nightcrawler.engine.mixup import VideoMixup, smooth_targets


def _clips(n: int = 4, c: int = 3, t: int = 6, h: int = 16, w: int = 20) -> torch.Tensor:
    """Clip i is filled with the value i + 1, so every voxel tells which clip it came from."""
    return (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1, 1).expand(n, c, t, h, w).clone()


def _cutmix_only(num_classes: int = 5, smoothing: float = 0.1) -> VideoMixup:
    return VideoMixup(num_classes, mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, label_smoothing=smoothing)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_box_spans_height_and_width_on_every_frame(seed):
    np.random.seed(seed)
    n, c, t, h, w = 4, 3, 6, 16, 20
    x = _clips(n, c, t, h, w)
    mixed, targets = _cutmix_only()(x, torch.tensor([0, 1, 2, 3]))
    assert mixed.shape == (n, c, t, h, w)
    for i in range(n):
        partner = n - 1 - i
        pasted = mixed[i] == partner + 1
        assert torch.all((mixed[i] == i + 1) | pasted)
        # the same box on every channel and every frame: time is never cut
        assert torch.equal(pasted, pasted[:1, :1].expand_as(pasted))
        box = pasted[0, 0]
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if rows.numel():  # a rectangle in (H, W)
            assert torch.equal(
                box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all(), torch.tensor(True)
            )
            assert int(box.sum()) == rows.numel() * cols.numel()
        # lambda (from the targets) is the area left untouched
        lam_from_area = 1.0 - box.float().mean().item()
        kept = smooth_targets(torch.nn.functional.one_hot(torch.tensor(i), 5).float()[None], 0.1)[0]
        other = smooth_targets(torch.nn.functional.one_hot(torch.tensor(partner), 5).float()[None], 0.1)[0]
        assert targets[i].tolist() == pytest.approx(
            (lam_from_area * kept + (1 - lam_from_area) * other).tolist()
        )


def test_some_seed_cuts_a_box_that_is_neither_empty_nor_full():
    """Guards the previous test against passing only on degenerate boxes."""
    partial = 0
    for seed in range(6):
        np.random.seed(seed)
        mixed, _ = _cutmix_only()(_clips(), torch.arange(4))
        frac = (mixed[0] == 4).float().mean().item()
        partial += 0.0 < frac < 1.0
    assert partial >= 3


def test_plain_timm_on_5d_clips_would_cut_time():
    """The reason for the wrapper: timm's box indexes dims 2-3, i.e. T and H of a video batch."""
    from timm.data.mixup import Mixup

    for seed in range(6):
        np.random.seed(seed)
        x = _clips(t=16)
        Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, num_classes=5)(x, torch.arange(4))
        pasted = x[0, 0] == 4  # (T, H, W)
        if pasted.any() and not pasted.all():
            per_frame = pasted.any(-1).any(-1)
            if not per_frame.all():
                return  # some frames untouched: time was cut
    pytest.fail("expected timm to leave some frames untouched for one of the seeds")


def test_mixup_blends_with_the_reversed_batch():
    np.random.seed(3)
    mixer = VideoMixup(3, mixup_alpha=0.8, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.0)
    x = torch.randn(4, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    mixed, targets = mixer(x.clone(), torch.tensor([0, 1, 2, 0]))
    assert targets[0, 0].item() == pytest.approx(1.0)  # clips 0 and 3 are both class 0
    lam = targets[1, 1].item()  # clip 1 (class 1) with clip 2 (class 2)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert targets[1, 2].item() == pytest.approx(1 - lam)


def test_soft_targets_are_smoothed_then_mixed():
    np.random.seed(0)
    mixer = VideoMixup(3, mixup_alpha=0.8, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.3)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    x = torch.stack([torch.zeros(3, 2, 2, 2), torch.ones(3, 2, 2, 2)])
    mixed, targets = mixer.mix_soft(x, probs)
    lam = 1.0 - mixed[0].mean().item()  # clip 0 = 0 * lam + 1 * (1 - lam)
    y = probs * 0.7 + 0.1
    torch.testing.assert_close(targets, lam * y + (1 - lam) * y.flip(0), rtol=1e-5, atol=1e-6)
    assert targets.sum(-1).tolist() == pytest.approx([1.0, 1.0])


def test_odd_batches_and_bad_shapes_are_rejected():
    mixer = _cutmix_only()
    with pytest.raises(ValueError, match="even"):
        mixer(_clips(n=3), torch.arange(3))
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\)"):
        mixer(torch.zeros(2, 3, 4, 4), torch.arange(2))


def test_from_cfg():
    cfg = get_cfg()
    assert VideoMixup.from_cfg(cfg) is None
    cfg.MIXUP.ENABLE = True
    cfg.MODEL.NUM_CLASSES = 11
    m = VideoMixup.from_cfg(cfg)
    assert m.num_classes == 11 and m.label_smoothing == 0.1
    np.random.seed(0)
    _, targets = m(_clips(n=2), torch.tensor([0, 0]))
    # same class on both sides: on value 0.9 + 0.1/11, off value 0.1/11 (spec 6.1)
    assert targets[0, 0].item() == pytest.approx(0.9 + 0.1 / 11) and targets[0, 1].item() == pytest.approx(
        0.1 / 11
    )
