"""The reference design's dense network: Dense 64 ReLU -> Dense n_classes (logits; softmax in the loss),
optionally with periodic embeddings of the numeric inputs in front."""

from __future__ import annotations

import math

import torch
from torch import nn


class PeriodicEmbedding(nn.Module):
    """Each numeric input x_j -> ReLU(W_j [cos(2 pi c_j x_j), sin(2 pi c_j x_j)] + b_j), with trainable
    frequencies c_j drawn from N(0, sigma^2): the PLR embedding of Gorishniy et al. (2022), "On Embeddings
    for Numerical Features in Tabular Deep Learning". A linear layer over one standardised value can only
    draw one threshold per unit; these features let the MLP draw the sharp steps (capital gain, age bands)
    that tree ensembles find."""

    def __init__(self, n_features: int, frequencies: int, sigma: float, dim: int):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, frequencies) * sigma)
        bound = 1 / math.sqrt(2 * frequencies)  # nn.Linear's initialisation, per feature
        self.weight = nn.Parameter(torch.empty(n_features, 2 * frequencies, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, features) -> (batch, features * dim)
        angle = 2 * math.pi * self.frequencies * x.float().unsqueeze(-1)
        waves = torch.cat([torch.cos(angle), torch.sin(angle)], -1)
        return torch.relu(torch.einsum("bfk,fkd->bfd", waves, self.weight) + self.bias).flatten(1)


class MLP(nn.Module):
    input_column = "x"  # (batch, features); the first `numeric` columns are the numeric features

    def __init__(self, in_features: int, n_outputs: int, hidden: list[int], dropout: float, numeric: int = 0,
                 frequencies: int = 0, sigma: float = 1.0, dim: int = 16):
        super().__init__()
        self.numeric = numeric if frequencies else 0
        self.embed = PeriodicEmbedding(numeric, frequencies, sigma, dim) if self.numeric else None
        width = in_features - self.numeric + self.numeric * dim  # each numeric column becomes `dim` wide
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        if self.embed is not None:
            x = torch.cat([self.embed(x[:, : self.numeric]).to(x.dtype), x[:, self.numeric:]], 1)
        return self.net(x)
