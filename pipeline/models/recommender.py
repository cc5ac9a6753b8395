"""Recommenders scoring (user, item) pairs: a neural model with genre features, and biased MF.

NeuralRecommender follows the reference design: a user's preference over item features and the
item's features feed Dense 64 -> Dense 32 -> Dense 1 (sigmoid for ratings, a logit for ranking),
with learned user and item embeddings beside the features. A new user can be scored from a genre
preference vector alone (user index 0, the `profile` argument).
BiasedMF is the classic baseline: global + user bias + item bias + <p_u, q_i>.
"""

from __future__ import annotations

import torch
from torch import nn


class NeuralRecommender(nn.Module):
    uses_features = True

    def __init__(self, n_users: int, n_items: int, item_genres: torch.Tensor, user_profiles: torch.Tensor,
                 dim: int, hidden: list[int], dropout: float, objective: str, train_negatives: int):
        super().__init__()
        self.objective, self.n_items, self.train_negatives = objective, n_items, train_negatives
        self.user_embedding = nn.Embedding(n_users + 1, dim)
        self.item_embedding = nn.Embedding(n_items + 1, dim)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=0.01)
        self.register_buffer("item_genres", item_genres.float())
        self.register_buffer("user_profiles", user_profiles.float())
        genres = item_genres.shape[1]
        self.user_features = nn.Linear(genres, dim, bias=False)
        self.item_features = nn.Linear(genres, dim, bias=False)
        layers: list[nn.Module] = []
        width = 3 * dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)

    def forward(self, user: torch.Tensor, item: torch.Tensor, profile: torch.Tensor | None = None) -> torch.Tensor:
        preference = self.user_profiles[user] if profile is None else profile
        u = self.user_embedding(user) + self.user_features(preference)
        v = self.item_embedding(item) + self.item_features(self.item_genres[item])
        z = self.head(torch.cat([u, v, u * v], dim=-1)).squeeze(-1)
        return 0.5 + 4.5 * torch.sigmoid(z) if self.objective == "rating" else z


class BiasedMF(nn.Module):
    uses_features = False

    def __init__(self, n_users: int, n_items: int, dim: int, global_mean: float, objective: str, train_negatives: int):
        super().__init__()
        self.objective, self.n_items, self.train_negatives = objective, n_items, train_negatives
        self.user_factors = nn.Embedding(n_users + 1, dim)
        self.item_factors = nn.Embedding(n_items + 1, dim)
        self.user_bias = nn.Embedding(n_users + 1, 1)
        self.item_bias = nn.Embedding(n_items + 1, 1)
        for table in (self.user_factors, self.item_factors):
            nn.init.normal_(table.weight, std=0.01)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        self.global_bias = nn.Parameter(torch.tensor(float(global_mean if objective == "rating" else 0.0)))

    def forward(self, user: torch.Tensor, item: torch.Tensor, profile: torch.Tensor | None = None) -> torch.Tensor:
        dot = (self.user_factors(user) * self.item_factors(item)).sum(-1)
        return self.global_bias + self.user_bias(user).squeeze(-1) + self.item_bias(item).squeeze(-1) + dot
