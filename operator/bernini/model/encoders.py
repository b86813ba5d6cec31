"""Condition encoders: image, point cloud or text to one conditioning embedding."""

import torch
from torch import nn

from bernini.model.shapes import CONDITION_DIM, TEXT_TOKENS, TEXT_VOCAB


class ImageEncoder(nn.Module):
    """A small CNN over a 224x224 RGB image (production: a CLIP image tower)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 8, stride=4, padding=2), nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.GELU(),
        )
        self.project = nn.Linear(128, CONDITION_DIM)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # (1, 3, 224, 224) -> (1, C)
        return self.project(self.features(image).mean(dim=(2, 3)))


class PointCloudEncoder(nn.Module):
    """PointNet: a shared per-point MLP and a symmetric max-pool over (25000, 3) points."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Sequential(
            nn.Conv1d(3, 64, 1), nn.GELU(), nn.Conv1d(64, 128, 1), nn.GELU(), nn.Conv1d(128, 256, 1),
        )
        self.project = nn.Linear(256, CONDITION_DIM)

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # (1, 25000, 3) -> (1, C)
        return self.project(self.shared(points.transpose(1, 2)).amax(dim=2))


class TextEncoder(nn.Module):
    """Token embedding plus one transformer layer, mean-pooled (production: a CLIP text tower)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(TEXT_VOCAB, CONDITION_DIM)
        self.position = nn.Parameter(torch.randn(1, TEXT_TOKENS, CONDITION_DIM) * 0.02)
        self.layer = nn.TransformerEncoderLayer(CONDITION_DIM, nhead=4, dim_feedforward=256, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (1, 77) int64 -> (1, C)
        return self.layer(self.embed(tokens) + self.position).mean(dim=1)


def tokenize(prompt: str) -> torch.Tensor:
    """Byte-level tokens, padded to the static length (production: the CLIP BPE tokenizer)."""
    ids = [1] + [2 + byte for byte in prompt.encode()[: TEXT_TOKENS - 2]] + [0]
    ids += [0] * (TEXT_TOKENS - len(ids))
    return torch.tensor([ids], dtype=torch.int64) % TEXT_VOCAB
