"""Text classifiers over sub-word ids (word id + hashed character n-grams per token).

- `bilstm_attention`: each token's vector is the mean of its word and character n-gram embeddings
  (fastText-style, robust on small data), a bidirectional LSTM reads the sentence and attention
  pooling weighs its states (the reference design names RNN, LSTM and attention).
- `mean_embedding`: the mean of word, bigram and character n-gram embeddings (a strong, simple
  baseline on short texts).
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(vectors: torch.Tensor, ids: torch.Tensor, dim: int) -> torch.Tensor:
    mask = (ids > 0).unsqueeze(-1).to(vectors.dtype)
    return (vectors * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


class BiLSTMAttention(nn.Module):
    input_column = "subwords"  # (batch, tokens, pieces)

    def __init__(self, vocab_size: int, n_classes: int, embed_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.attention = nn.Linear(2 * hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden, n_classes)

    def forward(self, subwords: torch.Tensor) -> torch.Tensor:
        tokens = masked_mean(self.embedding(subwords), subwords, dim=2)  # (batch, tokens, embed)
        present = subwords[:, :, 0] > 0
        states, _ = self.lstm(self.dropout(tokens))
        scores = self.attention(states).squeeze(-1).masked_fill(~present, -1e4)
        weights = torch.softmax(scores.float(), dim=1).to(states.dtype)
        pooled = (states * weights.unsqueeze(-1)).sum(1)
        return self.out(self.dropout(pooled))


class MeanEmbedding(nn.Module):
    input_column = "bag"  # (batch, ids): words, bigrams and character n-grams

    def __init__(self, vocab_size: int, n_classes: int, embed_dim: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(embed_dim, n_classes)

    def forward(self, bag: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(masked_mean(self.embedding(bag), bag, dim=1)))


ARCHITECTURES = {"bilstm_attention": BiLSTMAttention, "mean_embedding": MeanEmbedding}
