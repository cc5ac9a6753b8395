"""Cleaning: every row either passes all checks or goes to quarantine with the reason it failed.

A check is a pure function `batch -> array of reasons` ("" where the row is fine). The first
failing check names the reason; counts always reconcile: rows_in == rows_kept + rows_quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

REASON_COLUMN = "reason"
Check = Callable[[Any], np.ndarray]


def first_reason(reason_arrays: list[np.ndarray], n: int) -> np.ndarray:
    """Per row, the first non-empty reason over the checks (checks run in order)."""
    out = np.full(n, "", dtype=object)
    for reasons in reason_arrays:
        empty = out == ""
        out[empty] = np.asarray(reasons, dtype=object)[empty]
    return out


def annotate_batch(batch, checks: list[Check]):
    n = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
    reasons = first_reason([check(batch) for check in checks], n)
    if isinstance(batch, dict):
        batch[REASON_COLUMN] = reasons.astype(str)
    else:
        batch[REASON_COLUMN] = pd.array(reasons.astype(str), dtype="string")
    return batch


@dataclass
class CleanResult:
    kept: Any  # ray.data.Dataset without the reason column
    quarantined: Any  # ray.data.Dataset with the reason column
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_by_reason": dict(sorted(self.reasons.items())),
        }


def clean_dataset(ds, checks: list[Check], batch_format: str = "pandas") -> CleanResult:
    """Annotates each row with its reason (one pass, materialised) and splits kept from quarantined."""
    annotated = ds.map_batches(annotate_batch, fn_args=(checks,), batch_format=batch_format).materialize()
    reasons = value_counts(annotated, REASON_COLUMN)
    rows_in = sum(reasons.values())
    rows_kept = reasons.pop("", 0)
    kept = annotated.filter(expr=f"{REASON_COLUMN} == ''").drop_columns([REASON_COLUMN])
    quarantined = annotated.filter(expr=f"{REASON_COLUMN} != ''")
    return CleanResult(kept, quarantined, rows_in, rows_kept, rows_in - rows_kept, reasons)


def value_counts(ds, column: str) -> dict:
    """Counts of each value of `column`, computed per block and summed in the driver."""

    def count(batch: pd.DataFrame) -> pd.DataFrame:
        counts = batch[column].value_counts(dropna=False)
        return pd.DataFrame({"value": counts.index.astype(str), "n": counts.to_numpy(np.int64)})

    parts = ds.select_columns([column]).map_batches(count, batch_format="pandas").to_pandas()
    if parts.empty:
        return {}
    return {str(k): int(v) for k, v in parts.groupby("value")["n"].sum().items()}
