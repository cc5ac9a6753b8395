"""Baseline models, fitted in closed form or by scikit-learn rather than trained by Ray Train, yet served
like any candidate: each is a torch module that reads the same features through the same Predictor.

- `TfidfLinear` (text): TF-IDF of the bag's word and bigram ids and a linear layer, the weights of a
  scikit-learn logistic regression; saved as safetensors like a network.
- `ItemScores` (recommender): a fixed score per item (popularity, or the mean training rating).
- `SklearnClassifier` (any classifier over one feature matrix): a fitted scikit-learn estimator behind
  a module's forward; saved in skops' secure format (`pipeline.train.checkpoint`), never pickle.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.models.text import distinct_ids

LOG_FLOOR = 1e-12  # probabilities of 0 become log(1e-12), not -inf: softmax and argmax stay finite


class TfidfLinear(nn.Module):
    """Logits of a linear model over TF-IDF features (sublinear tf, smoothed idf, L2 row norm: scikit-learn's
    TfidfVectorizer defaults with sublinear_tf) of the ids below `id_limit` in a padded bag of ids."""

    input_column = "bag"

    def __init__(self, vocab_size: int, n_classes: int, id_limit: int):
        super().__init__()
        self.id_limit = id_limit
        self.register_buffer("idf", torch.zeros(vocab_size))
        self.weight = nn.Parameter(torch.zeros(vocab_size, n_classes))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def tfidf(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, values), both (rows, bag length): each distinct id once with its TF-IDF value, the rest 0."""
        ids, first = distinct_ids(bag, self.id_limit)
        # Sorted ids sit in runs of equal values; a run starts where `first` marks a new id, and every zero
        # (padding, ids past the limit: sorted first, unmarked by `first`) starts one of its own, so no run
        # index is -1. A run's length is the id's count in the text; its value is kept at `first` only.
        run = (first | (ids == 0)).long().cumsum(1) - 1
        counts = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device).scatter_add_(1, run, torch.ones_like(ids, dtype=torch.float32))
        values = (1 + counts.gather(1, run).log()) * self.idf[ids]
        values = torch.where(first, values, torch.zeros_like(values))
        return ids, values / values.norm(dim=1, keepdim=True).clamp(min=LOG_FLOOR)

    def forward(self, bag: torch.Tensor) -> torch.Tensor:
        ids, values = self.tfidf(bag)
        return (values.unsqueeze(-1) * self.weight[ids]).sum(1) + self.bias


class ItemScores(nn.Module):
    """One score per item whoever the user is: training popularity (ranking) or mean rating (rating)."""

    uses_features = False  # answers for a new user's genres weigh popularity by them (the recommender task)

    def __init__(self, n_items: int, objective: str, train_negatives: int = 1):
        super().__init__()
        self.n_items, self.objective, self.train_negatives = n_items, objective, train_negatives
        self.register_buffer("scores", torch.zeros(n_items + 1))

    def forward(self, user: torch.Tensor, item: torch.Tensor, profile: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores[item]


class SklearnClassifier(nn.Module):
    """A fitted scikit-learn classifier as a module: log class probabilities (the logits a softmax turns
    back into them) for a batch of feature rows, flattened (an image's pixels)."""

    def __init__(self, n_classes: int, input_column: str = "x", estimator=None):
        super().__init__()
        self.n_classes, self.input_column, self.estimator = n_classes, input_column, estimator

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rows = features.detach().float().cpu().numpy().reshape(len(features), -1)
        probabilities = np.full((len(rows), self.n_classes), LOG_FLOOR)
        if len(rows):  # columns by the estimator's own class codes
            probabilities[:, self.estimator.classes_.astype(np.int64)] = self.estimator.predict_proba(rows)
        return torch.from_numpy(np.log(np.maximum(probabilities, LOG_FLOOR)).astype(np.float32)).to(features.device)


def tfidf_rows(model: TfidfLinear, bag: np.ndarray):
    """The bag's TF-IDF features as a SciPy CSR matrix, exactly the values `model` computes."""
    import scipy.sparse as sp

    with torch.no_grad():
        ids, values = model.tfidf(torch.as_tensor(bag))
    keep = values > 0
    rows = torch.arange(len(ids)).unsqueeze(1).expand_as(ids)[keep]
    return sp.csr_matrix((values[keep].numpy(), (rows.numpy(), ids[keep].numpy())), shape=(len(ids), len(model.idf)))


def fit_tfidf_logreg(model: TfidfLinear, train: dict[str, np.ndarray], val: dict[str, np.ndarray], grid: tuple[float, ...],
                     seed: int) -> dict[str, float]:
    """Sets the idf from the training bags' document frequencies, then the weights of the scikit-learn
    logistic regression whose inverse regularisation C (from `grid`) scores best on validation."""
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        model.idf.fill_(1.0)
        ids, values = model.tfidf(torch.as_tensor(train["bag"]))
        df = torch.bincount(ids[values > 0], minlength=len(model.idf)).float()
        model.idf.copy_(torch.log((1 + len(ids)) / (1 + df)) + 1)  # scikit-learn's smoothed idf
    x_train, x_val = tfidf_rows(model, train["bag"]), tfidf_rows(model, val["bag"])
    fits = {}
    for c in grid:
        fitted = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, train["y"])
        fits[c] = (float((fitted.predict(x_val) == val["y"]).mean()), fitted)
    best = max(fits, key=lambda c: fits[c][0])  # the first C of the best accuracy
    fitted = fits[best][1]
    weight, bias = np.zeros(tuple(model.weight.shape), np.float32), np.zeros(len(model.bias), np.float32)
    classes = fitted.classes_.astype(np.int64)
    if len(classes) == 2:  # one coefficient row: the second class's logit against the first's 0
        weight[:, classes[1]], bias[classes[1]] = fitted.coef_[0], fitted.intercept_[0]
    else:
        weight[:, classes], bias[classes] = fitted.coef_.T, fitted.intercept_
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(weight))
        model.bias.copy_(torch.from_numpy(bias))
    return {"C": best, "val_accuracy": round(fits[best][0], 4)}
