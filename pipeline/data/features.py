"""Feature preprocessing fitted on the training split only.

A preprocessor learns its statistics from mergeable per-batch partials (computed by Ray Data on the
training split, merged in the driver), transforms batches with pure NumPy/pandas code, and saves
its state as JSON. The same `transform` runs in training, evaluation, Serve and batch inference.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np
import pandas as pd


def fit_partials(ds, partial: Callable[[Any], dict], batch_format: str = "pandas", batch_size: int | None = None,
                 columns: list[str] | None = None) -> list[dict]:
    """Runs `partial` on every batch of `ds` (only its `columns`, when given) and returns the JSON-able
    partial statistics. Whole blocks of a small materialised `ds` are read in the driver, those of a larger
    one by a plain task per block (`pipeline.data.local`)."""
    from pipeline.data.local import each_block

    if batch_size is None:
        parts = each_block(ds, functools.partial(block_partial, partial, batch_format, columns))
        if parts is not None:
            return [json.loads(part) for part in parts if part is not None]  # JSON round trip: what a task returns

    def run(batch):
        return {"partial": np.array([json.dumps(partial(batch))], dtype=object)}

    ds = ds.select_columns(columns) if columns is not None else ds
    rows = ds.map_batches(run, batch_format=batch_format, batch_size=batch_size).take_all()
    return [json.loads(row["partial"]) for row in rows]


def block_partial(partial: Callable[[Any], dict], batch_format: str, columns: list[str] | None, block) -> str | None:
    """`partial` of a block as the batch `map_batches(batch_size=None)` hands a function, as JSON; None when empty."""
    from pipeline.data.local import as_batch

    batch = as_batch(block, batch_format, columns)
    return None if batch is None else json.dumps(partial(batch))


# A per-block statistic: the columns it reads and a function of a pandas batch to a JSON-able dict.
Statistic = tuple[list[str], Callable[[pd.DataFrame], dict]]


def combined(statistics: dict[str, Statistic]) -> Statistic:
    """Several per-block statistics (name -> (columns read, partial)) as one: the columns any of them
    reads, and a partial returning each one's under its name."""
    columns = list(dict.fromkeys(c for cols, _ in statistics.values() for c in cols))
    return columns, lambda batch: {name: partial(batch) for name, (_, partial) in statistics.items()}


def gather_partials(ds, statistics: dict[str, Statistic]) -> dict[str, list[dict]]:
    """Several per-block statistics (name -> (columns read, partial)) in one pass over `ds`."""
    columns, partial = combined(statistics)
    return by_name(fit_partials(ds, partial, columns=columns), list(statistics))


def by_name(parts: list[dict], names: list[str]) -> dict[str, list[dict]]:
    """Per-block partials of a `combined` statistic as one list of partials per statistic."""
    return {name: [part[name] for part in parts] for name in names}


class Preprocessor(ABC):
    """Interface: fit on train, transform any split or request, round-trip through JSON.

    A preprocessor's state names its `kind`, so `load_preprocessor(state)` rebuilds the right class.
    """

    kind: str
    kinds: dict[str, type["Preprocessor"]] = {}
    input_columns: list[str]  # raw columns `transform` reads (besides the label)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Preprocessor.kinds[cls.kind] = cls

    @abstractmethod
    def transform(self, batch, with_target: bool = True) -> dict[str, np.ndarray]: ...

    def transform_for(self, split: str):
        """The transform applied to a split before training (a split may need extra columns)."""
        return self.transform

    @abstractmethod
    def state(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> "Preprocessor": ...


def load_preprocessor(state: dict[str, Any]) -> Preprocessor:
    kind = state.get("kind")
    if kind not in Preprocessor.kinds:
        raise ValueError(f"unknown preprocessor kind {kind!r} (known: {', '.join(Preprocessor.kinds)}); import its task first")
    return Preprocessor.kinds[kind].from_state(state)


class LabelEncoder:
    """Class names to contiguous indices; the order is saved with the model."""

    def __init__(self, classes: list[str]):
        self.classes = [str(c) for c in classes]

    def encode(self, labels) -> np.ndarray:
        labels = np.asarray(labels).astype(str)
        codes = category_codes(labels, self.classes)  # a hash lookup, no sort
        if (codes < 0).any():
            unknown = sorted(set(labels[codes < 0]))[:5]
            raise ValueError(f"labels not among the classes {self.classes}: {unknown}")
        return codes


def moments(values: np.ndarray) -> dict:
    """Count, mean and sum of squared deviations of one batch's values (merged by `merge_moments`)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if not values.size:
        return {"count": 0, "mean": 0.0, "m2": 0.0}
    mean = float(values.mean())
    return {"count": int(values.size), "mean": mean, "m2": float(((values - mean) ** 2).sum())}


def merge_moments(partials: list[dict]) -> tuple[float, float]:
    """Mean and standard deviation from per-batch `moments`, merged pairwise (Chan et al.): stable for
    values with a large mean and a small spread, where E[x^2] - mean^2 loses every digit."""
    count, mean, m2 = 0, 0.0, 0.0
    for p in partials:
        if not p["count"]:
            continue
        total = count + p["count"]
        delta = p["mean"] - mean
        mean += delta * p["count"] / total
        m2 += p["m2"] + delta * delta * count * p["count"] / total
        count = total
    if count == 0:
        raise ValueError("cannot fit a scaler on zero values")
    return mean, float(np.sqrt(m2 / count)) or 1.0


class TableFeatures(Preprocessor):
    kind = "table"
    """Numeric standardisation (optional log1p) and one-hot / ordinal categoricals, fitted on train.

    Imputation values (mean, median, mode, constant) come from the training split too. A category
    not seen in training (or too rare: `min_frequency`) maps to the `unknown` bucket.
    """

    def __init__(self, numeric: list[str], categorical: list[str], label_column: str | None, log1p: list[str],
                 encoding: str, min_frequency: int, imputation: dict[str, dict], state: dict | None = None):
        self.numeric, self.categorical, self.label_column = list(numeric), list(categorical), label_column
        self.log1p, self.encoding, self.min_frequency = set(log1p), encoding, int(min_frequency)
        self.imputation = imputation
        self.input_columns = self.numeric + self.categorical
        self.stats: dict[str, Any] = state or {}
        self.labels = LabelEncoder(self.stats["classes"]) if self.stats.get("classes") else None

    # --- fitting -------------------------------------------------------------------------------
    def partial(self, batch) -> dict:
        out: dict[str, Any] = {}
        for col in self.numeric:
            values = to_numbers(batch[col])
            values = values[np.isfinite(values)]
            out[col] = {"raw_sum": float(values.sum()), **moments(np.log1p(np.maximum(values, 0)) if col in self.log1p else values)}
            if self.imputation.get(col, {}).get("strategy") == "median":  # exact median from value counts
                uniq, counts = np.unique(values, return_counts=True)
                out[col].update(values=uniq.tolist(), counts=counts.tolist())
        for col in self.categorical:
            counts = to_text(batch[col]).value_counts()
            out[col] = {str(k): int(v) for k, v in counts.items()}
        if self.label_column:
            out["__labels__"] = sorted(to_text(batch[self.label_column]).dropna().unique().tolist())  # unique: vectorised, a set() iterates every row
        return out

    def fit(self, train_ds):
        return self.fit_from_partials(fit_partials(train_ds, self.partial))

    def fit_from_partials(self, partials: list[dict]) -> "TableFeatures":
        if not partials:
            raise ValueError("cannot fit features on an empty training split")
        stats: dict[str, Any] = {"numeric": {}, "categorical": {}}
        for col in self.numeric:
            count = sum(p[col]["count"] for p in partials)
            mean, std = merge_moments([p[col] for p in partials]) if count else (0.0, 1.0)
            raw_mean = sum(p[col]["raw_sum"] for p in partials) / count if count else 0.0
            rule = self.imputation.get(col, {})
            strategy = rule.get("strategy", "mean")
            fill = rule.get("fill_value") if strategy == "constant" else raw_mean
            if strategy == "median" and count:
                fill = merged_median([p[col] for p in partials])
            stats["numeric"][col] = {"mean": mean, "std": std, "fill": float(fill if fill is not None else raw_mean)}
        for col in self.categorical:
            counts: dict[str, int] = {}
            for p in partials:
                for k, v in p[col].items():
                    counts[k] = counts.get(k, 0) + v
            vocab = sorted((k for k, v in counts.items() if v >= self.min_frequency), key=lambda k: (-counts[k], k))
            rule = self.imputation.get(col, {})
            fill = rule.get("fill_value") if rule.get("strategy") == "constant" else (vocab[0] if rule.get("strategy") == "mode" and vocab else None)
            stats["categorical"][col] = {"vocab": vocab, "fill": None if fill is None else str(fill)}
        if self.label_column:
            stats["classes"] = sorted({c for p in partials for c in p["__labels__"]})
            self.labels = LabelEncoder(stats["classes"])
        self.stats = stats
        return self

    # --- transforming --------------------------------------------------------------------------
    def width(self) -> int:
        cats = self.stats["categorical"]
        per_cat = (lambda c: len(cats[c]["vocab"]) + 1) if self.encoding == "onehot" else (lambda c: 1)
        return len(self.numeric) + sum(per_cat(c) for c in self.categorical)

    def transform(self, batch, with_target=True):
        n = len(batch)
        x = np.zeros((n, self.width()), dtype=np.float32)
        for j, col in enumerate(self.numeric):
            s = self.stats["numeric"][col]
            values = to_numbers(batch[col])
            values = np.where(np.isfinite(values), values, s["fill"])
            if col in self.log1p:
                values = np.log1p(np.maximum(values, 0))
            x[:, j] = (values - s["mean"]) / s["std"]
        offset = len(self.numeric)
        for col in self.categorical:
            s = self.stats["categorical"][col]
            text = to_text(batch[col])
            if s["fill"] is not None:
                text = text.fillna(s["fill"])
            codes = category_codes(text, s["vocab"])
            unknown = len(s["vocab"])
            codes = np.where(codes < 0, unknown, codes)
            if self.encoding == "onehot":
                x[np.arange(n), offset + codes] = 1.0
                offset += unknown + 1
            else:
                x[:, offset] = codes
                offset += 1
        out = {"x": x}
        if with_target:
            out["y"] = self.labels.encode(to_text(batch[self.label_column]).to_numpy(dtype=object))
        return out

    def state(self):
        return {"kind": "table", "numeric": self.numeric, "categorical": self.categorical, "label_column": self.label_column,
                "log1p": sorted(self.log1p), "encoding": self.encoding, "min_frequency": self.min_frequency,
                "imputation": self.imputation, "stats": self.stats}

    @classmethod
    def from_state(cls, state):
        return cls(state["numeric"], state["categorical"], state["label_column"], state["log1p"], state["encoding"],
                   state["min_frequency"], state["imputation"], state["stats"])


def merged_median(partials: list[dict]) -> float:
    merged: dict[float, int] = {}
    for p in partials:
        for v, c in zip(p["values"], p["counts"]):
            merged[v] = merged.get(v, 0) + c
    values = np.array(sorted(merged))
    counts = np.array([merged[v] for v in values])
    cumulative, n = np.cumsum(counts), int(counts.sum())
    low, high = values[np.searchsorted(cumulative, (n - 1) // 2 + 1)], values[np.searchsorted(cumulative, n // 2 + 1)]
    return float((low + high) / 2)  # as numpy/pandas: the mean of the two middle values when n is even


def to_numbers(values) -> np.ndarray:
    """Values as float64, NaN where one is missing or not a number, as `pd.to_numeric(errors="coerce")`
    reads them. Text (a source read without types) goes through Arrow's parser first, a fifteenth of
    pandas' time, and rounds to the nearest double where pandas' parser can be one unit in the last place
    off ("+10E24"); where Arrow refuses a value (" 5", "1,5") pandas reads the column as before."""
    series = pd.Series(values)
    if series.dtype != object and pd.api.types.is_string_dtype(series.dtype):  # pandas' text, or Arrow's as Ray Data hands it
        import pyarrow as pa
        import pyarrow.compute as pc

        text = pa.array(series)
        try:
            numbers = pc.cast(pc.if_else(pc.equal(text, ""), None, text), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        else:
            return numbers.to_numpy(zero_copy_only=False)  # nulls as NaN
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def category_codes(text, vocabulary: list[str]) -> np.ndarray:
    """Each value of `text` (a pandas text column or a NumPy array of strings) as its index in
    `vocabulary`, -1 where it is missing or not in it: one Arrow hash lookup (pandas' Categorical costs
    ten times as much on a batch of thousands of rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(text, from_pandas=True), value_set=pa.array(vocabulary, pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def to_text(values) -> pd.Series:
    text = pd.Series(values).astype("string").str.strip()
    return text.mask(text == "")
