"""The low-light camera model: unprocessing inverts the camera's processing, the noise follows the sensor's
physics (shot noise grows with the signal, read and row noise do not), highlights clip and blacks crush."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from nightcrawler.data.sensor import (
    Lighting,
    LowLightCamera,
    SensorRanges,
    inverse_smoothstep,
    smoothstep,
    tukey_lambda,
)

H, W = 24, 32


def _camera(seed: int = 0, **changes) -> LowLightCamera:
    cam = LowLightCamera.draw(np.random.default_rng(seed), W, H)
    return replace(cam, **changes)


def _flat_light(level: float) -> Lighting:
    return Lighting(torch.full((H, W), level), torch.zeros(H, W))


def test_tone_curve_and_tukey_lambda():
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(inverse_smoothstep(smoothstep(x)), x, atol=1e-5)
    u = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(tukey_lambda(u, 1.0), 2 * u - 1)  # lambda 1: uniform on [-1, 1]
    assert torch.allclose(tukey_lambda(u, 0.0), torch.log(u / (1 - u)))  # lambda 0: logistic
    assert torch.allclose(tukey_lambda(u, 1e-8), tukey_lambda(u, 0.0))


def test_processing_inverts_unprocessing_without_noise_or_loss():
    cam = _camera(
        1, system_gain=1e-3, read_scale=0.0, row_std=0.0, digital_gain=1.0, denoise_sigma=0.0,
        white_level=2**14 - 1, lighting=_flat_light(1.0),
    )  # fmt: skip
    cam = replace(cam, wb_camera=cam.wb_true.clone())
    srgb = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    out = cam.capture(srgb, torch.ones(2, 1, H, W), torch.Generator().manual_seed(1))
    assert (out - srgb).abs().max() < 0.02  # 14-bit quantisation and a near-noiseless sensor only


def test_shot_noise_grows_with_the_signal_read_and_row_noise_do_not():
    gen = torch.Generator().manual_seed(0)

    def raw_var(level: float, cam: LowLightCamera) -> tuple[float, float]:
        cam = replace(cam, lighting=_flat_light(level))
        cam_rgb = torch.ones(16, 3, H, W)  # a white diffuse surface
        raw = cam.expose(cam_rgb, torch.zeros(16, 1, H, W), gen) - cam.black_level
        return float(raw.mean()), float(raw.var())

    cam = _camera(2, system_gain=2.0, read_scale=0.0, row_std=0.0, white_level=2**14 - 1)
    (m1, v1), (m2, v2) = raw_var(0.01, cam), raw_var(0.04, cam)
    assert m2 == pytest.approx(4 * m1, rel=0.02)
    assert v1 == pytest.approx(2.0 * m1, rel=0.1) and v2 == pytest.approx(2.0 * m2, rel=0.1)  # Poisson x gain
    noisy = replace(cam, read_scale=3.0, row_std=2.0)
    (_, w1), (_, w2) = raw_var(0.01, noisy), raw_var(0.04, noisy)
    assert w1 - v1 == pytest.approx(w2 - v2, rel=0.25) and w1 - v1 > 10  # signal-independent floor


def test_highlights_clip_and_blacks_crush():
    cam = _camera(3, denoise_sigma=0.0)
    bulbs = torch.zeros(H, W)
    bulbs[:4, :4] = 50.0
    cam = replace(cam, lighting=Lighting(torch.full((H, W), 0.01), bulbs))
    black = torch.zeros(4, 3, H, W)
    out = cam.capture(black, torch.ones(4, 1, H, W), torch.Generator().manual_seed(0))
    assert out[:, :, :4, :4].min() > 0.99  # the bulb saturates the sensor
    assert (out[:, :, 8:, 8:] < 0.5 / 255).float().mean() > 0.3  # crushed: 8-bit zero below the black level
    hidden = cam.capture(black, torch.zeros(4, 1, H, W), torch.Generator().manual_seed(0))
    assert hidden[:, :, :4, :4].max() < 0.5  # an object in front hides the bulb


def test_parameters_are_drawn_from_their_documented_ranges_and_are_reproducible():
    r = SensorRanges()
    for seed in range(20):
        cam = LowLightCamera.draw(np.random.default_rng(seed), W, H)
        assert r.system_gain[0] <= cam.system_gain <= r.system_gain[1]
        assert math.log2(cam.white_level + 1) in r.bit_depths
        assert r.black_level[0] * cam.white_level <= cam.black_level <= r.black_level[1] * cam.white_level
        assert torch.allclose(cam.rgb2cam.sum(1), torch.ones(3))
        assert cam.denoise_sigma == 0 or r.denoise_sigma[0] <= cam.denoise_sigma <= r.denoise_sigma[1]
    a = LowLightCamera.draw(np.random.default_rng(5), W, H)
    b = LowLightCamera.draw(np.random.default_rng(5), W, H)
    scene = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(2, 1, H, W)
    first = a.capture(scene, ones, torch.Generator().manual_seed(9))
    assert torch.equal(first, b.capture(scene, ones, torch.Generator().manual_seed(9)))
