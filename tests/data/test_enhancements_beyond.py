"""Enhancements beyond the original's fixed gamma, on generated dark videos: adaptive_gamma (one gamma per clip
or video, to a target mean luma), clahe (kornia), learned_curve (tools/train_enhancer.py trains it); their specs
round-trip and work as phase keys and TTA settings."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from nightcrawler.config import get_cfg
from nightcrawler.data.decoders import open_video
from nightcrawler.data.enhance import (
    AdaptiveGamma,
    Clahe,
    Gamma,
    Identity,
    build_enhancement,
    check_enhancement_keys,
    mean_luma,
    phase_enhancement,
)
from nightcrawler.data.synthetic import SyntheticSpec, make_synthetic_dataset
from nightcrawler.data.transforms import test_views
from nightcrawler.data.ug2 import build_dataset
from nightcrawler.engine.tta import parse_tta_setting
from nightcrawler.models.checkpoint import CheckpointError
from nightcrawler.utils.errors import EXIT_DATA

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # procedural backgrounds


def _tool():
    spec = importlib.util.spec_from_file_location("train_enhancer", REPO / "tools" / "train_enhancer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Short 64x48 videos of 2 classes: 4 dark-train, 4 ARID (dark, as the real ones) and 4 labelled
    normal-light."""
    root = tmp_path_factory.mktemp("dark")
    spec = SyntheticSpec(
        seed=5, num_classes=2, videos_per_class=2, frames=16, width=64, height=48, procedural=True,
        per_source=(("dry", 0), ("test", 0)),
    )  # fmt: skip
    make_synthetic_dataset(root, spec)
    return root


def _decode(path: Path) -> torch.Tensor:
    with open_video(path, "pyav") as reader:
        return reader.frames_at(range(len(reader)))


@pytest.fixture(scope="module")
def dark_clips(data_root) -> list[torch.Tensor]:
    return [_decode(p) for p in sorted((data_root / "dark_train" / "Train").rglob("*.mp4"))]


@pytest.fixture(scope="module")
def bright_clip(data_root) -> torch.Tensor:
    return _decode(sorted((data_root / "labeled_train" / "Train").rglob("*.mp4"))[0])


def make_cfg(data_root: Path):
    cfg = get_cfg()
    cfg.DATA.PATH_PREFIX = str(data_root)
    cfg.DATA.PATH_LABEL_SEPARATOR = ","
    cfg.DATA.DECODING_BACKEND = "pyav"
    cfg.DATA.NUM_FRAMES = 4
    cfg.DATA.TEST_CROP_SIZE = 32
    cfg.MODEL.NUM_CLASSES = 2
    return cfg


# ---------------------------------------------------------------------------------------------- adaptive gamma


def test_adaptive_gamma_brings_dark_clips_to_the_target_luma(dark_clips):
    for clip in dark_clips:
        assert mean_luma(clip) < 0.15  # the generated videos are dark
        for target in (0.45, 0.3):
            out = AdaptiveGamma(target=target)(clip)
            assert out.dtype == torch.uint8 and out.shape == clip.shape
            assert mean_luma(out) == pytest.approx(target, abs=0.01)
    assert AdaptiveGamma().target == 0.45  # constructible without arguments


def test_adaptive_gamma_never_darkens_a_bright_clip(bright_clip):
    assert mean_luma(bright_clip) > 0.45
    e = AdaptiveGamma()
    assert e.gamma_for(bright_clip) == 1.0
    assert torch.equal(e(bright_clip), bright_clip)
    below = AdaptiveGamma(target=0.9)  # bright but below this target: brightened, never darkened
    assert 0.1 <= below.gamma_for(bright_clip) < 1.0
    assert bool((below(bright_clip) >= bright_clip).all())


def test_adaptive_gamma_is_one_gamma_per_clip_within_bounds(dark_clips):
    e = AdaptiveGamma()
    assert e.lut() is None and not e.is_identity  # the table depends on the clip
    clip = dark_clips[0]
    gamma = e.gamma_for(clip)
    assert 0.1 < gamma < 1.0
    assert torch.equal(e(clip), Gamma(gamma)(clip))  # one look-up for every pixel of every frame
    # the statistic is the whole clip's: black frames added to it lower its gamma
    assert e.gamma_for(torch.cat([clip, clip.mul(0)])) < gamma
    black = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    black[0, 0, 0] = 1
    assert e.gamma_for(black) == 0.1  # clamped: near-black clips are not blown up without bound
    assert AdaptiveGamma(min_gamma=0.3).gamma_for(black) == 0.3
    with pytest.raises(ValueError, match="min_gamma <= max_gamma"):
        AdaptiveGamma(min_gamma=0.5, max_gamma=0.4)
    with pytest.raises(ValueError, match="target"):
        build_enhancement("adaptive_gamma:target=1.5")


def test_adaptive_gamma_test_path_uses_one_gamma_per_video(data_root):
    cfg = make_cfg(data_root)
    ds = build_dataset(cfg, "arid", enhancement="adaptive_gamma", views=2, crops=1)
    assert ds.enhancement == AdaptiveGamma()
    item = ds[0]
    with open_video(ds.paths[0], "pyav") as reader:
        views = ds.test_clip_indices(len(reader))
        union = sorted({i for v in views for i in v})
        frames = reader.frames_at(union)
    gamma = AdaptiveGamma().gamma_for(frames)  # of the decoded union, shared by every view
    enhanced = Gamma(gamma)(frames)
    expected = torch.cat(
        [test_views(enhanced[[union.index(i) for i in v]], 32, 1, None, ds.mean, ds.std) for v in views]
    )
    assert torch.allclose(item["inputs"], expected)


# ---------------------------------------------------------------------------------------------- clahe


def _local_contrast(frames: torch.Tensor) -> float:
    """Mean standard deviation of the luma within 8x8 blocks."""
    luma = frames.float() @ torch.tensor([0.299, 0.587, 0.114])
    t, h, w = luma.shape
    blocks = luma[:, : h // 8 * 8, : w // 8 * 8].reshape(t, h // 8, 8, w // 8, 8)
    return float(blocks.std(dim=(2, 4)).mean())


def _spread(frames: torch.Tensor) -> float:
    """Width of the bulk of the luma histogram (5th to 95th percentile): in a dark clip from the low-light camera
    the lamps and highlights fill the top percent, as in ARID, so the extreme percentiles would measure them."""
    luma = (frames.float() @ torch.tensor([0.299, 0.587, 0.114])).flatten()
    return float(torch.quantile(luma, 0.95) - torch.quantile(luma, 0.05))


def test_clahe_raises_local_contrast_and_spread_of_a_dark_clip(dark_clips):
    clip = dark_clips[1]
    e = Clahe()
    out = e(clip)
    assert out.dtype == torch.uint8 and out.shape == clip.shape
    assert e.lut() is None
    assert _local_contrast(out) > 1.5 * _local_contrast(clip)
    assert _spread(out) > 1.5 * _spread(clip)
    assert mean_luma(out) > mean_luma(clip)
    assert torch.equal(e(clip), out)  # deterministic
    # value mode keeps hues: where two channels clearly differ, their order survives
    r, g = clip[..., 0].int(), clip[..., 1].int()
    clear = (r - g).abs() >= 3
    r2, g2 = out[..., 0].int(), out[..., 1].int()
    assert bool(((r2 - g2).sign() == (r - g).sign())[clear].float().mean() > 0.99)
    for other in ("clahe:channel=luma", "clahe:channel=rgb,clip_limit=2,grid=4"):
        res = build_enhancement(other)(clip)
        assert res.dtype == torch.uint8 and res.shape == clip.shape
        assert _local_contrast(res) > _local_contrast(clip)


# ---------------------------------------------------------------------------------------------- learned curve


def test_curve_network_and_losses_on_known_images():
    from nightcrawler.models import light_curve as lc

    torch.manual_seed(0)
    net = lc.CurveEstimator()
    assert sum(p.numel() for p in net.parameters()) == 79416  # Zero-DCE's 7 x 32-channel network
    x = torch.rand(2, 3, 40, 48)
    enhanced, maps = net(x)
    assert maps.shape == (2, 24, 40, 48) and float(maps.abs().max()) <= 1.0
    assert float((enhanced - x).abs().max()) < 0.05  # untrained: close to the identity curve
    assert net(x, scale=4)[1].shape == (2, 24, 40, 48)  # fast variant: maps upsampled to full size
    a = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(lc.apply_curves(torch.full((1, 3, 4, 4), 0.2), a), torch.full((1, 3, 4, 4), 0.28))
    with torch.inference_mode():  # the in-place path gives the same values
        assert torch.allclose(lc.apply_curves(x, maps.detach()), enhanced.detach(), atol=1e-6)
    grey = torch.full((1, 3, 32, 32), 0.6)
    assert float(lc.exposure_loss(grey)) == pytest.approx(0.0, abs=1e-12)
    assert float(lc.exposure_loss(grey * 0.5)) == pytest.approx(0.09)
    assert float(lc.colour_constancy_loss(grey)) == 0.0
    assert float(lc.colour_constancy_loss(grey * torch.tensor([1.0, 0.5, 0.5]).view(1, 3, 1, 1))) > 0.1
    assert (
        float(lc.spatial_consistency_loss(x, x)) == 0.0
        and float(lc.spatial_consistency_loss(torch.full_like(x, 0.6), x)) > 0
    )
    assert float(lc.illumination_smoothness_loss(a)) == 0.0
    losses = lc.zero_reference_losses(x, enhanced, maps)
    w = lc.CurveLossWeights()
    expected = sum(getattr(w, k) * losses[k] for k in ("spatial", "exposure", "colour", "smoothness"))
    assert torch.allclose(losses["total"], expected)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory) -> Path:
    """tools/train_enhancer.py: 30 steps on 64x64 crops of the config's train_unlabel videos (dark ones)."""
    out = tmp_path_factory.mktemp("curve") / "curve.pyth"
    cfg = REPO / "configs" / "models" / "uniformer_tiny.yaml"
    argv = [
        "--cfg", str(cfg), "--out", str(out), "--steps", "30", "--batch", "4", "--size", "64",
        "--frames-per-video", "2", "--lr", "1e-3", "--no-progress", "--save-every", "10",
        "DATA.PATH_PREFIX", str(data_root), "DATA.PATH_LABEL_SEPARATOR", ",", "DATA.DECODING_BACKEND", "pyav",
        "DATA_LOADER.NUM_WORKERS", "0", "MODEL.NUM_CLASSES", "2",
    ]  # fmt: skip
    assert _tool().main(argv) == 0
    return out


def _scalars(logdir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_train_enhancer_loss_falls_and_writes_checkpoint_and_events(trained):
    logdir = trained.parent / "curve_tb"
    assert list(logdir.glob("events.out.tfevents.*"))
    total = _scalars(logdir, "loss/total")
    assert len(total) == 30
    first, last = sum(total[:5]) / 5, sum(total[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    for term in ("spatial", "exposure", "colour", "smoothness"):
        assert len(_scalars(logdir, f"loss/{term}")) == 30
    ckpt = torch.load(trained, weights_only=True)
    assert ckpt["kind"] == "light_curve"
    assert ckpt["model_args"] == {"channels": 32, "depth": 7, "iterations": 8}
    assert ckpt["train"]["steps_done"] == 30 and ckpt["train"]["videos"] == 8
    assert not list(trained.parent.glob(".curve.pyth.*"))  # no temporary left behind


def test_learned_curve_brightens_a_dark_clip(trained, dark_clips):
    clip = dark_clips[2]
    e = build_enhancement(f"learned_curve:checkpoint={trained}")
    out = e(clip)
    assert out.dtype == torch.uint8 and out.shape == clip.shape
    assert e.lut() is None
    assert mean_luma(out) > mean_luma(clip) + 0.15
    fast = build_enhancement(f"learned_curve:checkpoint={trained},scale=2")
    out2 = fast(clip)
    assert out2.shape == clip.shape and mean_luma(out2) > mean_luma(clip) + 0.15
    assert (out2.float() - out.float()).abs().mean() < 8  # smooth curves: the fast variant changes little
    assert torch.equal(e(clip[:3]), out[:3])  # frames are independent (chunking changes nothing)


def test_learned_curve_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope" / "curve.pyth"
    with pytest.raises(CheckpointError, match=re.escape(str(missing))):
        build_enhancement(f"learned_curve:checkpoint={missing}")
    wrong = tmp_path / "weights.pyth"
    torch.save({"model_state": {"w": torch.zeros(1)}}, wrong)
    with pytest.raises(CheckpointError, match=re.escape(str(wrong)) + ".*not a learned_curve checkpoint"):
        build_enhancement(f"learned_curve:checkpoint={wrong}")
    with pytest.raises(ValueError, match="learned_curve accepts checkpoint, scale"):
        build_enhancement("learned_curve")


def test_train_enhancer_without_videos_is_a_data_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "c.pyth"), "--steps", "1"]
    assert _tool().main(argv) == EXIT_DATA
    assert "no video files" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- specs


def test_every_new_spec_round_trips_and_works_as_phase_key_and_tta_setting(trained, data_root):
    specs = [
        "adaptive_gamma",
        "adaptive_gamma:target=0.3,min_gamma=0.2,max_gamma=0.9",
        "clahe",
        "clahe:clip_limit=2,grid=4,channel=luma",
        f"learned_curve:checkpoint={trained}",
        f"learned_curve:checkpoint={trained},scale=2",
    ]
    cfg = make_cfg(data_root)
    for spec in specs:
        e = build_enhancement(spec)
        assert build_enhancement(e.spec) == e and build_enhancement(e.spec).spec == e.spec
        assert re.fullmatch(r"[\w.+-]+", e.tag()), e.tag()
        setting = parse_tta_setting(f"1x1@{spec}", Identity())
        assert setting.enhancement == e and setting.label() == f"1x1@{e.tag()}"
        for key in ("TEST", "EVAL", "BN", "TRAIN_DARK"):
            cfg.ENHANCE[key] = spec
        check_enhancement_keys(cfg)
        assert phase_enhancement(cfg, "test") == e
        assert phase_enhancement(cfg, "train", "train_unlabel") == e
        assert phase_enhancement(cfg, "train", "train_label") == Identity()  # normal light: never enhanced
    assert AdaptiveGamma().spec == "adaptive_gamma:target=0.45,min_gamma=0.1,max_gamma=1"
    assert Clahe().spec == "clahe:clip_limit=4,grid=8,channel=value"
    assert build_enhancement("clahe:clip_limit=4.0") == Clahe()
    assert len({build_enhancement(s).tag() for s in specs}) == len(specs)
