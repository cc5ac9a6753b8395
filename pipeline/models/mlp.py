"""The reference design's dense network: Dense 64 ReLU -> Dense n_classes (logits; softmax in the loss)."""

from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    input_column = "x"  # (batch, features)

    def __init__(self, in_features: int, n_outputs: int, hidden: list[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
