"""Feature preprocessing fitted on the training split only.

A preprocessor learns its statistics from mergeable per-batch partials (computed by Ray Data on the
training split, merged in the driver), transforms batches with pure NumPy/pandas code, and saves
its state as JSON. The same `transform` runs in training, evaluation, Serve and batch inference.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np


def fit_partials(ds, partial: Callable[[Any], dict], batch_format: str = "pandas", batch_size: int = 8192) -> list[dict]:
    """Runs `partial` on every batch of `ds` and returns the JSON-able partial statistics."""

    def run(batch):
        return {"partial": np.array([json.dumps(partial(batch))], dtype=object)}

    rows = ds.map_batches(run, batch_format=batch_format, batch_size=batch_size).take_all()
    return [json.loads(row["partial"]) for row in rows]


class Preprocessor:
    """Interface: fit on train, transform any split or request, round-trip through JSON."""

    def fit(self, train_ds) -> "Preprocessor":
        raise NotImplementedError

    def transform(self, batch, with_target: bool = True) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Preprocessor":
        raise NotImplementedError


class LabelEncoder:
    """Class names to contiguous indices; the order is saved with the model."""

    def __init__(self, classes: list[str]):
        self.classes = [str(c) for c in classes]
        self.index = {c: i for i, c in enumerate(self.classes)}

    def encode(self, labels) -> np.ndarray:
        labels = np.asarray(labels).astype(str)
        out = np.array([self.index.get(v, -1) for v in np.unique(labels)], dtype=np.int64)
        codes = out[np.searchsorted(np.unique(labels), labels)]
        if (codes < 0).any():
            unknown = sorted(set(labels[codes < 0]))[:5]
            raise ValueError(f"labels not among the classes {self.classes}: {unknown}")
        return codes


def merge_moments(partials: list[dict]) -> tuple[float, float]:
    """Mean and standard deviation from partial {"sum", "sumsq", "count"} dicts."""
    total = sum(p["count"] for p in partials)
    if total == 0:
        raise ValueError("cannot fit a scaler on zero values")
    s = sum(p["sum"] for p in partials)
    sq = sum(p["sumsq"] for p in partials)
    mean = s / total
    var = max(sq / total - mean * mean, 0.0)
    return mean, float(np.sqrt(var)) or 1.0


def moments(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"sum": float(values.sum()), "sumsq": float((values**2).sum()), "count": int(values.size)}
