"""The reference design's CNN: Conv 32 -> pool -> Conv 64 -> pool -> Conv 64 -> Dense 64 -> Dense n.

"Same" padding keeps it usable on inputs as small as 8x8 (digits) as well as 32x32; batch
normalisation (one of the reference's tips) makes training on small data stable.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, batchnorm: bool, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU())
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class CNN(nn.Module):
    input_column = "x"  # (batch, channels, height, width)

    def __init__(self, in_shape: tuple[int, int, int], n_classes: int, channels: list[int], dense: int, dropout: float,
                 batchnorm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_shape[0]
        for i, c_out in enumerate(channels):
            layers += conv_block(c_in, c_out, batchnorm, pool=i < len(channels) - 1)
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *in_shape)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, dense), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dense, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
