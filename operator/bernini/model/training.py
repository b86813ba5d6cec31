"""Training the reference model on the procedural data set, on the CPU.

Three phases, each small enough for a 2-core machine: the wavelet decoder learns to draw shapes from latents (with a
training-only shape encoder that makes those latents), the denoiser learns the latents of each class, and each
condition encoder learns to name the class of its input. Every encoder answers with its class's fixed embedding,
so the denoiser never needs the encoders while it trains.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bernini.model import dataset
from bernini.model.diffusion import Denoiser, alphas_cumprod
from bernini.model.encoders import ImageEncoder, PointCloudEncoder, TextEncoder, tokenize
from bernini.model.shapes import CONDITION_DIM, LATENT_CHANNELS, LATENT_SIZE
from bernini.model.wavelet import WaveletDecoder

UNCONDITIONAL_SHARE = 0.15  # classifier-free guidance needs the denoiser to know the null condition too
TRAINING_POINTS = 2048  # PointNet max-pools: the 25000 points it serves cover the same surface


@dataclass
class Plan:
    """How much each phase trains; the defaults fit the 15-minute budget on 2 CPU cores."""

    per_class: int = 48
    decoder_steps: int = 300
    decoder_batch: int = 8
    denoiser_steps: int = 900
    denoiser_batch: int = 16
    encoder_steps: int = 800
    encoder_batch: int = 16
    text_steps: int = 1500  # a prompt's class word moves between templates: the text tower needs longer
    seed: int = 0


class ShapeEncoder(nn.Module):
    """SDF (B, 1, 64, 64, 64) -> latent (B, 4, 12, 12, 12) with unit variance per channel. Only training uses it:
    the served pipeline gets its latents from the denoiser. Linear on purpose: the denoiser's estimate of a clean
    latent is an average of latents, and only a linear code makes that the code of an average shape."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(1, 16, 4, stride=4), nn.Conv3d(16, 32, 3, padding=1),
                                 nn.Upsample(size=(LATENT_SIZE,) * 3, mode="trilinear"),
                                 nn.Conv3d(32, LATENT_CHANNELS, 3, padding=1))
        self.normalize = nn.BatchNorm3d(LATENT_CHANNELS, affine=False)

    def forward(self, sdf: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.net(sdf))


def class_embeddings(seed: int = 0) -> torch.Tensor:
    """(classes, CONDITION_DIM) orthogonal vectors of unit-variance entries: what each encoder must answer."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(CONDITION_DIM, len(dataset.CLASSES), generator=generator))
    return basis.T * CONDITION_DIM**0.5


def _fit(parameters, lr: float, steps: int, count: int, batch: int, generator: torch.Generator, loss_of, name: str,
         log, every: int = 100) -> None:
    """Adam with a one-cycle schedule over `steps` random batches of indices into `count` samples;
    loss_of(index) -> the batch's loss."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for step in range(steps):
        loss = loss_of(torch.randint(0, count, (batch,), generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % every == 0 or step == steps - 1:
            log(f"{name} step {step}: loss {loss.item():.4f}")


def train_decoder(sdfs: torch.Tensor, plan: Plan, generator: torch.Generator, log) -> tuple[WaveletDecoder, ShapeEncoder]:
    decoder, encoder = WaveletDecoder(), ShapeEncoder()
    decoder.mean_shape.copy_(sdfs.mean(dim=0)[None, None])
    # A residual of up to twice the truncation, in orthonormal Haar units (x8 at level 2, x2.8 at level 1).
    decoder.reach.copy_(torch.tensor([16 * dataset.TRUNCATION, 6 * dataset.TRUNCATION]))

    def loss_of(index):
        target = sdfs[index][:, None]
        latent = encoder(target)
        # Noise on the latent keeps the decoder calm about the denoiser's small errors.
        drawn = decoder(latent + 0.2 * torch.randn(latent.shape, generator=generator))
        near = 1 + 4 * (target.abs() < 0.05)  # the surface is what the mesh shows
        return (near * (drawn - target).abs()).mean()

    _fit([*decoder.parameters(), *encoder.parameters()], 2e-3, plan.decoder_steps, len(sdfs), plan.decoder_batch,
         generator, loss_of, "decoder", log, every=50)
    encoder.eval()
    return decoder.eval(), encoder


def encode_shapes(encoder: ShapeEncoder, sdfs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([encoder(chunk[:, None]) for chunk in sdfs.split(16)])


def train_denoiser(latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor, plan: Plan,
                   generator: torch.Generator, log) -> Denoiser:
    denoiser = Denoiser()
    alphas = alphas_cumprod()

    def loss_of(index):
        clean = latents[index]
        t = torch.randint(0, len(alphas), (len(index),), generator=generator)
        alpha = alphas[t][:, None, None, None, None]
        noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * torch.randn(clean.shape, generator=generator)
        # The encoders land near, not on, their class's embedding.
        condition = embeddings[labels[index]] + 0.3 * torch.randn(len(index), CONDITION_DIM, generator=generator)
        keep = torch.rand(len(index), 1, generator=generator) >= UNCONDITIONAL_SHARE
        return (denoiser.clean_latent(noisy, t.float(), condition * keep) - clean).square().mean()

    _fit(denoiser.parameters(), 1e-3, plan.denoiser_steps, len(latents), plan.denoiser_batch, generator, loss_of,
         "denoiser", log)
    return denoiser.eval()


def _train_encoder(encoder: nn.Module, inputs, labels: torch.Tensor, embeddings: torch.Tensor, steps: int,
                   plan: Plan, generator: torch.Generator, name: str, log) -> nn.Module:
    """inputs(index) -> the encoder's input for those samples."""
    encoder.train()
    _fit(encoder.parameters(), 3e-3, steps, len(labels), plan.encoder_batch, generator,
         lambda index: (encoder(inputs(index)) - embeddings[labels[index]]).square().mean(), f"{name} encoder", log)
    return encoder.eval()


def train_encoders(sdfs: np.ndarray, labels: np.ndarray, embeddings: torch.Tensor, plan: Plan,
                   generator: torch.Generator, log) -> dict[str, nn.Module]:
    rng = np.random.default_rng(plan.seed)
    label_tensor = torch.as_tensor(labels)
    sketches = torch.cat([dataset.sketch(chunk) for chunk in np.array_split(sdfs, max(1, len(sdfs) // 16))])
    clouds = torch.as_tensor(np.stack([dataset.surface_points(sdf, TRAINING_POINTS, rng) for sdf in sdfs]))
    prompts = [[dataset.prompt(dataset.CLASSES[label], rng) for _ in range(8)] for label in labels]

    def tokens(index):
        return torch.cat([tokenize(prompts[i][int(rng.integers(8))]) for i in index.tolist()])

    return {
        "encoder-image": _train_encoder(ImageEncoder(), lambda index: sketches[index], label_tensor, embeddings,
                                        plan.encoder_steps, plan, generator, "image", log),
        "encoder-pointcloud": _train_encoder(PointCloudEncoder(), lambda index: clouds[index], label_tensor,
                                             embeddings, plan.encoder_steps, plan, generator, "pointcloud", log),
        "encoder-text": _train_encoder(TextEncoder(), tokens, label_tensor, embeddings, plan.text_steps, plan,
                                       generator, "text", log),
    }


def train(plan: Plan | None = None, log=print) -> dict:
    """Everything the reference model learns, as state dicts by artifact (the decoder's under "decoder"), plus how
    long each phase took."""
    plan = plan or Plan()
    torch.manual_seed(plan.seed)
    generator = torch.Generator().manual_seed(plan.seed)
    started, timings = time.perf_counter(), {}

    def phase(name):
        nonlocal started
        timings[name] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()

    sdf_array, labels = dataset.dataset(plan.per_class, plan.seed)
    sdfs = torch.as_tensor(sdf_array)
    phase("data")
    decoder, shape_encoder = train_decoder(sdfs, plan, generator, log)
    phase("decoder")
    embeddings = class_embeddings(plan.seed)
    denoiser = train_denoiser(encode_shapes(shape_encoder, sdfs), torch.as_tensor(labels), embeddings, plan,
                              generator, log)
    phase("denoiser")
    encoders = train_encoders(sdf_array, labels, embeddings, plan, generator, log)
    phase("encoders")
    return {"decoder": decoder.state_dict(), "diffusion": denoiser.state_dict(),
            **{name: encoder.state_dict() for name, encoder in encoders.items()}, "timings": timings}
