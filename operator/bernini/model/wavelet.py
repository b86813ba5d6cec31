"""Wavelet decoder: latent -> Haar wavelet coefficients -> inverse 3D DWT (two levels) -> SDF grid."""

import itertools
import math

import torch
from torch import nn

from bernini.model.shapes import LATENT_CHANNELS, SDF_SIZE

# pywt's subband order for 3D: one letter per axis, a = approximation (low-pass), d = detail (high-pass).
SUBBANDS = ["".join(bands) for bands in itertools.product("ad", repeat=3)]
_HAAR = {"a": (1 / math.sqrt(2), 1 / math.sqrt(2)), "d": (1 / math.sqrt(2), -1 / math.sqrt(2))}


def _synthesis_kernel() -> torch.Tensor:
    """(8, 1, 2, 2, 2): the separable Haar reconstruction filters of the 8 subbands."""
    kernel = torch.zeros(8, 1, 2, 2, 2)
    for channel, subband in enumerate(SUBBANDS):
        for p, q, r in itertools.product(range(2), repeat=3):
            kernel[channel, 0, p, q, r] = _HAAR[subband[0]][p] * _HAAR[subband[1]][q] * _HAAR[subband[2]][r]
    return kernel


def inverse_haar_3d(coefficients: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """One level of the inverse 3D discrete Haar transform: (B, 8, n, n, n) subbands -> (B, 1, 2n, 2n, 2n)."""
    return nn.functional.conv_transpose3d(coefficients, kernel, stride=2)


def sphere_sdf(size: int, radius: float = 0.55) -> torch.Tensor:
    axis = torch.linspace(-1, 1, size)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    return (x**2 + y**2 + z**2).sqrt() - radius


class WaveletDecoder(nn.Module):
    """Predicts level-2 coefficients (approximation + 7 details) at 16^3 and level-1 details at 32^3,
    then inverts the transform to a 64^3 signed distance field around a mean shape."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        coarse = SDF_SIZE // 4
        self.lift = nn.Sequential(nn.Conv3d(LATENT_CHANNELS, width, 3, padding=1), nn.SiLU(),
                                  nn.Upsample(size=(coarse,) * 3, mode="trilinear"))
        self.level2 = nn.Conv3d(width, 8, 3, padding=1)
        self.level1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear"), nn.Conv3d(width, 7, 3, padding=1))
        self.register_buffer("kernel", _synthesis_kernel())
        # The mean shape, which the residual the network predicts sits on: a sphere until training puts the data
        # set's mean SDF there.
        self.register_buffer("mean_shape", sphere_sdf(SDF_SIZE)[None, None])
        # How far the residual's coefficients may reach (level 2, level 1): a trained model sets them.
        self.register_buffer("reach", torch.tensor([0.1, 0.05]))

    def coefficients(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.lift(latent)
        return torch.tanh(self.level2(h)) * self.reach[0], torch.tanh(self.level1(h)) * self.reach[1]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:  # (1, 4, 12, 12, 12) -> (1, 1, 64, 64, 64)
        level2, level1_details = self.coefficients(latent)
        approximation = inverse_haar_3d(level2, self.kernel)  # 16^3 -> 32^3
        residual = inverse_haar_3d(torch.cat([approximation, level1_details], dim=1), self.kernel)  # -> 64^3
        return self.mean_shape + residual
