"""The reference model's compiled stages with their example inputs: trained weights, or random ones from a seed
for tests that exercise only the plumbing."""

from dataclasses import dataclass

import torch
from torch import nn

from bernini.model.diffusion import Denoiser
from bernini.model.encoders import ImageEncoder, PointCloudEncoder, TextEncoder
from bernini.model.shapes import (CONDITION_DIM, DECODER_BATCHES, GUIDANCE_BATCH, IMAGE_SIZE, LATENT_CHANNELS, LATENT_SIZE, POINTS,
                                  TEXT_TOKENS)
from bernini.model.wavelet import WaveletDecoder


@dataclass(frozen=True)
class CompiledStage:
    """One traced graph: its artifact name, its pipeline stage and the static example inputs."""

    artifact: str
    stage: str
    module: nn.Module
    inputs: tuple[tuple[str, torch.Tensor], ...]
    neuron_cores: int = 1


def reference_stages(seed: int = 0, weights: dict | None = None) -> list[CompiledStage]:
    """weights: the state dicts by artifact that bernini.model.weights.trained() returns; None draws them."""
    torch.manual_seed(seed)
    guided = torch.zeros(GUIDANCE_BATCH, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, LATENT_SIZE)
    stages = [
        CompiledStage("encoder-image", "encoder", ImageEncoder().eval(),
                      (("image", torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)),)),
        CompiledStage("encoder-pointcloud", "encoder", PointCloudEncoder().eval(),
                      (("points", torch.zeros(1, POINTS, 3)),)),
        CompiledStage("encoder-text", "encoder", TextEncoder().eval(),
                      (("tokens", torch.zeros(1, TEXT_TOKENS, dtype=torch.int64)),)),
        CompiledStage("diffusion", "diffusion", Denoiser().eval(),
                      (("latent", guided), ("t", torch.zeros(GUIDANCE_BATCH)),
                       ("condition", torch.zeros(GUIDANCE_BATCH, CONDITION_DIM)))),
    ]
    decoder = WaveletDecoder().eval()
    for batch in DECODER_BATCHES:  # static shapes: one graph per batch bucket, same weights
        latent = torch.zeros(batch, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, LATENT_SIZE)
        stages.append(CompiledStage("decoder" if batch == 1 else f"decoder-b{batch}", "decoder", decoder,
                                    (("latent", latent),)))
    if weights is not None:
        for stage in stages:
            if stage.stage != "decoder":
                stage.module.load_state_dict(weights[stage.artifact])
        decoder.load_state_dict(weights["decoder"])  # one module behind every batch bucket
    return stages
