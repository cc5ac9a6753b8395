"""Text classifiers over sub-word ids (word id + hashed character n-grams per token).

- `bilstm_attention`: each token's vector is the mean of its word and character n-gram embeddings
  (fastText-style, robust on small data), a bidirectional LSTM reads the sentence and attention
  pooling weighs its states (the reference design names RNN, LSTM and attention).
- `mean_embedding`: the mean of word, bigram and character n-gram embeddings (a strong, simple
  baseline on short texts).
- `nb_ngram`: the words and bigrams present, each scaled by its naive-Bayes log-count ratio from the
  training data, into a trained linear layer (NBSVM, Wang & Manning 2012, trained by gradient descent):
  on short review sentences it beats TF-IDF + logistic regression, which the others do not.
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


def distinct_ids(bag: torch.Tensor, id_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, first): the bag's ids below `id_limit`, sorted, with `first` marking each distinct non-zero
    id once (repeats, padding and ids at or above the limit are not marked)."""
    ids = bag.masked_fill(bag >= id_limit, 0).sort(dim=1).values
    first = torch.ones_like(ids, dtype=torch.bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return ids, first & (ids > 0)


def nb_log_ratios(class_docs: list[list[int]], alpha: float = 1.0) -> torch.Tensor:
    """(ids, classes) one-vs-rest naive-Bayes log-count ratios log(p / q) from how many training texts
    of each class hold each id: p the id's smoothed share among the class's texts, q among the rest."""
    docs = torch.tensor(class_docs, dtype=torch.float64).T  # (ids, classes)
    rest = docs.sum(1, keepdim=True) - docs
    p = (docs + alpha) / (docs + alpha).sum(0)
    q = (rest + alpha) / (rest + alpha).sum(0)
    return torch.log(p / q).float()


class NBNgram(nn.Module):
    input_column = "bag"  # (batch, ids): words and bigrams are the ids below `id_limit`

    def __init__(self, ratios: torch.Tensor, n_classes: int, dropout: float):
        super().__init__()
        self.id_limit = len(ratios)
        self.register_buffer("ratios", ratios.reshape(self.id_limit, n_classes).clone())
        self.weight = nn.Parameter(torch.zeros(self.id_limit, n_classes))
        self.bias = nn.Parameter(torch.zeros(n_classes))
        self.dropout = nn.Dropout(dropout)  # drops whole words and bigrams while training

    def forward(self, bag: torch.Tensor) -> torch.Tensor:
        ids, first = distinct_ids(bag, self.id_limit)
        present = self.dropout(first.to(self.weight.dtype)).unsqueeze(-1)
        return (present * self.ratios[ids] * self.weight[ids]).sum(1) + self.bias

