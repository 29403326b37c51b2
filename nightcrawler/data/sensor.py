"""A low-light camera that loses information the way a sensor does, for the synthetic dark videos.

A rendered scene (sRGB frames in [0, 1], plus a map of light sources) goes through three parts:

1. **Unprocessing** (Brooks et al. 2019, "Unprocessing Images for Learned Raw Denoising"): the sRGB frame is
   taken back to linear camera RGB by inverting a global tone curve (smoothstep), the display gamma (2.2), a
   colour-correction matrix (camera RGB -> sRGB) and the white-balance gains. The mosaic is not modelled: every
   pixel keeps three channels.
2. **The scene's light and the sensor** (after the physics-based noise model of Wei et al. 2020, ELD): the
   linear reflectance is lit by a dim ambient level plus the falloff of one or two lamps; the lamps' bulbs (and
   other highlights) are emitters far brighter than the sensor's white level. The expected signal in digital
   numbers (DN) is turned into photo-electrons by the system gain, drawn as a Poisson count (shot noise), and
   read noise (Tukey-lambda, heavy-tailed), row noise (one Gaussian offset per row and frame) and a black level
   are added, before quantisation to the sensor's bit depth and clipping at its white level.
3. **The camera's own processing**: black-level subtraction with negatives clipped (crushed blacks), a digital
   gain, the camera's white balance (its own estimate, a little off the truth: a colour cast), the colour matrix,
   the display gamma and the tone curve, optionally in-camera denoising (a spatial Gaussian blur), and 8-bit
   output. H.264 compression follows when the frames are written (``synthetic.write_video``).

Every parameter is drawn per video from :class:`SensorRanges`, whose defaults are chosen so that the dark test
videos come out like ARID's (per-channel mean about 0.05-0.11, std/mean above 1: lamps and highlights beside
crushed blacks; measured by :func:`nightcrawler.data.synthetic.measure_brightness`). Gamma correction no longer
inverts the degradation: it brightens the shot and read noise with the signal, and what the blacks lost is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DISPLAY_GAMMA = 2.2


@dataclass(frozen=True)
class SensorRanges:
    """Ranges the per-video camera parameters are drawn from (uniform unless marked log-uniform)."""

    ambient: tuple[float, float] = (0.005, 0.016)  # log-uniform: white diffuse surface / white level, no lamp
    lamps: tuple[int, int] = (1, 2)  # lamps per scene (inclusive)
    lamp_pool: tuple[float, float] = (
        0.03,
        0.12,
    )  # lamp light at the pool centre, fraction of the white level
    lamp_spread: tuple[float, float] = (0.08, 0.25)  # pool radius, fraction of the frame diagonal
    bulb_radius: tuple[float, float] = (0.025, 0.06)  # visible bulb radius, fraction of the frame height
    bulb_level: tuple[float, float] = (3.0, 30.0)  # log-uniform: bulb radiance / white level (clipped)
    system_gain: tuple[float, float] = (0.5, 4.0)  # log-uniform: DN per photo-electron (the ISO)
    read_noise: tuple[float, float] = (1.0, 4.0)  # log-uniform: read-noise scale, DN
    tukey_lambda: tuple[float, float] = (-0.2, 0.1)  # read-noise shape (0: logistic; < 0: heavier tails)
    row_noise: tuple[float, float] = (0.2, 1.2)  # row-offset std, DN
    bit_depths: tuple[int, ...] = (10, 12, 14)
    black_level: tuple[float, float] = (0.02, 0.06)  # black level, fraction of the white level
    digital_gain: tuple[float, float] = (1.0, 2.5)
    red_gain: tuple[float, float] = (1.9, 2.4)  # true white-balance gains (Brooks et al.'s ranges)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    wb_error: float = 0.12  # the camera's own white balance is off the truth by up to this fraction
    ccm_mix: tuple[float, float] = (0.15, 0.4)  # how far the camera's RGB is from sRGB (0: identical)
    denoise_probability: float = 0.5  # share of cameras with in-camera denoising
    denoise_sigma: tuple[float, float] = (0.6, 1.2)  # its Gaussian blur, pixels


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """The global tone curve of unprocessing: 3x^2 - 2x^3 on [0, 1]."""
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`smoothstep` on [0, 1]."""
    y = y.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


def tukey_lambda(u: torch.Tensor, lam: float) -> torch.Tensor:
    """The Tukey-lambda quantile function at ``u`` in (0, 1) (``lam`` = 0: the logistic distribution)."""
    if abs(lam) < 1e-6:
        return torch.log(u) - torch.log1p(-u)
    return (u.pow(lam) - (1.0 - u).pow(lam)) / lam


@dataclass
class Lighting:
    """The scene's light: the illumination map and where the bulbs are (both (H, W))."""

    illumination: torch.Tensor  # fraction of the white level a white diffuse surface reaches
    bulbs: torch.Tensor  # bulb radiance / white level (0 off the bulbs)

    @classmethod
    def draw(cls, rng: np.random.Generator, ranges: SensorRanges, width: int, height: int) -> Lighting:
        yy, xx = torch.meshgrid(
            torch.arange(height, dtype=torch.float32) + 0.5,
            torch.arange(width, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        diagonal = math.hypot(width, height)
        illumination = torch.full((height, width), _log_uniform(rng, ranges.ambient))
        bulbs = torch.zeros(height, width)
        for _ in range(int(rng.integers(ranges.lamps[0], ranges.lamps[1] + 1))):
            # a lamp in the upper two thirds of the frame, its bulb visible, its light pooled around it
            lx, ly = rng.uniform(0.05, 0.95) * width, rng.uniform(0.03, 0.6) * height
            d2 = (xx - lx) ** 2 + (yy - ly) ** 2
            spread = rng.uniform(*ranges.lamp_spread) * diagonal
            illumination += rng.uniform(*ranges.lamp_pool) / (1.0 + d2 / spread**2)
            radius = rng.uniform(*ranges.bulb_radius) * height
            disc = ((radius - d2.sqrt()) / 1.0).clamp(0, 1)  # about one pixel of soft edge
            bulbs = torch.maximum(bulbs, disc * _log_uniform(rng, ranges.bulb_level))
        return cls(illumination, bulbs)


@dataclass
class LowLightCamera:
    """One video's camera (drawn by :meth:`draw`); :meth:`capture` turns scene frames into its output."""

    rgb2cam: torch.Tensor  # (3, 3), rows sum to 1
    wb_true: torch.Tensor  # (3,) white-balance gains of the scene's light
    wb_camera: torch.Tensor  # (3,) the camera's own estimate
    system_gain: float  # DN per electron
    read_scale: float  # DN
    read_lambda: float
    row_std: float  # DN
    white_level: int  # DN (2**bits - 1)
    black_level: float  # DN
    digital_gain: float
    denoise_sigma: float  # 0: no in-camera denoising
    lighting: Lighting

    @classmethod
    def draw(
        cls, rng: np.random.Generator, width: int, height: int, ranges: SensorRanges = SensorRanges()
    ) -> LowLightCamera:
        mix = rng.uniform(*ranges.ccm_mix)
        other = torch.tensor(rng.uniform(0.0, 1.0, (3, 3))).float()
        rgb2cam = (1.0 - mix) * torch.eye(3) + mix * other / other.sum(1, keepdim=True)
        wb_true = torch.tensor([rng.uniform(*ranges.red_gain), 1.0, rng.uniform(*ranges.blue_gain)]).float()
        error = torch.tensor(rng.uniform(-ranges.wb_error, ranges.wb_error, 3)).float()
        error[1] = 0.0
        bits = int(rng.choice(ranges.bit_depths))
        white = 2**bits - 1
        denoise = rng.uniform(*ranges.denoise_sigma) if rng.random() < ranges.denoise_probability else 0.0
        return cls(
            rgb2cam=rgb2cam,
            wb_true=wb_true,
            wb_camera=wb_true * (1.0 + error),
            system_gain=_log_uniform(rng, ranges.system_gain),
            read_scale=_log_uniform(rng, ranges.read_noise),
            read_lambda=float(rng.uniform(*ranges.tukey_lambda)),
            row_std=float(rng.uniform(*ranges.row_noise)),
            white_level=white,
            black_level=float(rng.uniform(*ranges.black_level)) * white,
            digital_gain=float(rng.uniform(*ranges.digital_gain)),
            denoise_sigma=float(denoise),
            lighting=Lighting.draw(rng, ranges, width, height),
        )

    # ------------------------------------------------------------------------------------------ the three parts
    def unprocess(self, srgb: torch.Tensor) -> torch.Tensor:
        """sRGB (n, 3, H, W) in [0, 1] -> linear camera RGB reflectance under the scene's (true) light."""
        linear = inverse_smoothstep(srgb).clamp_min(1e-8).pow(DISPLAY_GAMMA)
        cam = torch.einsum("ij,njhw->nihw", self.rgb2cam, linear)
        return cam / self.wb_true[None, :, None, None]

    def expose(self, cam: torch.Tensor, bulbs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Linear camera RGB (n, 3, H, W) and visible bulb radiance (n, 1, H, W) -> quantised raw DN."""
        signal_range = self.white_level - self.black_level
        light = cam * self.lighting.illumination + bulbs  # fraction of the white level
        expected = light.clamp_min(0.0) * signal_range  # DN
        # clip the photon rate far above the white level: saturated either way, and Poisson stays finite
        electrons = torch.poisson(expected.clamp_max(4.0 * signal_range) / self.system_gain, generator=gen)
        raw = electrons * self.system_gain
        u = torch.rand(raw.shape, generator=gen).clamp_(1e-6, 1.0 - 1e-6)
        raw += self.read_scale * tukey_lambda(u, self.read_lambda)
        n, _, h, _ = raw.shape
        raw += self.row_std * torch.randn((n, 1, h, 1), generator=gen)
        raw += self.black_level
        return raw.round_().clamp_(0.0, float(self.white_level))

    def process(self, raw: torch.Tensor) -> torch.Tensor:
        """The camera's pipeline: raw DN (n, 3, H, W) -> sRGB in [0, 1] (before 8-bit quantisation)."""
        x = ((raw - self.black_level) / (self.white_level - self.black_level)).clamp_min_(0.0)
        x = x * self.digital_gain * self.wb_camera[None, :, None, None]
        x = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.rgb2cam), x.clamp_(0.0, 1.0))
        x = smoothstep(x.clamp_(0.0, 1.0).clamp_min_(1e-8).pow_(1.0 / DISPLAY_GAMMA))
        if self.denoise_sigma > 0:
            x = gaussian_blur(x, self.denoise_sigma)
        return x.clamp_(0.0, 1.0)

    def capture(self, srgb: torch.Tensor, emit: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Scene frames (n, 3, H, W) in [0, 1] and the share of each pixel where the bulbs are visible (n, 1, H,
        W), 0 where the object hides them -> the camera's frames (n, 3, H, W) in [0, 1]."""
        bulbs = emit * self.lighting.bulbs
        return self.process(self.expose(self.unprocess(srgb), bulbs, gen))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (n, c, H, W) with reflected borders (kornia), the kernel 2.5 sigma each side."""
    from kornia.filters import gaussian_blur2d

    size = 2 * max(1, int(math.ceil(2.5 * sigma))) + 1
    return gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")
