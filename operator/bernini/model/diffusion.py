"""Reverse diffusion: a conditional 3D denoiser and a DDIM sampler with classifier-free guidance."""

import math

import torch
from torch import nn

from bernini.model.shapes import CONDITION_DIM, LATENT_CHANNELS, LATENT_SIZE

TRAIN_STEPS = 1000
STEPS, GUIDANCE = 8, 3.0  # what a request that names neither gets


def alphas_cumprod() -> torch.Tensor:
    """The DDPM schedule both training and the sampler read: how much signal is left at each timestep."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, TRAIN_STEPS), dim=0)


def timestep_embedding(t: torch.Tensor, dim: int = CONDITION_DIM) -> torch.Tensor:
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class FiLMBlock(nn.Module):
    """Conv3d residual block whose features are scaled and shifted by the condition and timestep."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)
        self.film = nn.Linear(CONDITION_DIM, 2 * channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(context).chunk(2, dim=1)
        h = self.norm(x) * (1 + scale[:, :, None, None, None]) + shift[:, :, None, None, None]
        return x + self.conv(torch.nn.functional.silu(h))


class Denoiser(nn.Module):
    """Predicts the noise in a latent grid (B, 4, 12, 12, 12) at timestep t given the condition. The network
    estimates the clean latent, which a small data set learns far faster than the noise, and the graph turns that
    estimate into the noise the sampler expects."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.time = nn.Sequential(nn.Linear(CONDITION_DIM, CONDITION_DIM), nn.SiLU(), nn.Linear(CONDITION_DIM, CONDITION_DIM))
        self.stem = nn.Conv3d(LATENT_CHANNELS, width, 3, padding=1)
        self.blocks = nn.ModuleList([FiLMBlock(width) for _ in range(3)])
        self.head = nn.Conv3d(width, LATENT_CHANNELS, 3, padding=1)
        self.register_buffer("alphas", alphas_cumprod())

    def clean_latent(self, latent: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        context = self.time(timestep_embedding(t)) + condition
        h = self.stem(latent)
        for block in self.blocks:
            h = block(h, context)
        return self.head(h)

    def forward(self, latent: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        alpha = self.alphas[t.long()][:, None, None, None, None]
        clean = self.clean_latent(latent, t, condition)
        return (latent - alpha.sqrt() * clean) / (1 - alpha).sqrt()


def ddim_sample(denoise, condition: torch.Tensor, steps: int = STEPS, guidance: float = GUIDANCE,
                seed: int = 0) -> torch.Tensor:
    """Deterministic DDIM over `steps` timesteps; each step runs the compiled denoiser once on a batch of
    two (conditional, unconditional) and mixes them with the guidance scale."""
    device = condition.device
    generator = torch.Generator().manual_seed(seed)  # drawn on the CPU: every device samples the same noise
    latent = torch.randn(1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, LATENT_SIZE, generator=generator).to(device)
    alphas = alphas_cumprod().tolist()
    timesteps = torch.linspace(TRAIN_STEPS - 1, 0, steps).long().tolist()
    guided = torch.cat([condition, torch.zeros_like(condition)])  # the null condition
    for index, t in enumerate(timesteps):
        both = denoise(latent.repeat(2, 1, 1, 1, 1), torch.full((2,), float(t), device=device), guided)
        conditional, unconditional = both.chunk(2)
        noise = unconditional + guidance * (conditional - unconditional)
        alpha = alphas[t]
        alpha_next = alphas[timesteps[index + 1]] if index + 1 < steps else 1.0
        predicted = (latent - math.sqrt(1 - alpha) * noise) / math.sqrt(alpha)
        latent = math.sqrt(alpha_next) * predicted + math.sqrt(1 - alpha_next) * noise
    return latent
