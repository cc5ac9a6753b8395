"""Cleaning: every row either passes all steps or goes to quarantine with the reason it failed.

A step is a function `batch -> (batch, reasons)`: it may transform the batch (type coercion,
labeling) and names a reason ("" where the row is fine) for each row it rejects. The first failing
step names the row's reason. De-duplication on key columns runs after the steps, over the rows that
passed; a row missing a key value is never a duplicate (mark the column `required` to quarantine it).
Counts always reconcile: rows_in == rows_kept + rows_quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.data.features import Statistic, fit_partials
from pipeline.data.local import local_batches
from pipeline.data.quarantine import REASON_COLUMN, CleaningPassSink, cleaning_pass
from pipeline.data.schema import dataset_schema
from pipeline.data.split import stable_hash

DEDUP_HASH = "_dedup_hash"  # 0: the row has no complete key
HASH_PRIME = np.uint64(0x100000001B3)
Step = Callable[[Any], tuple[Any, np.ndarray]]
STREAM_BLOCK_BYTES = 8 << 20  # streamed cleaning: one CSV parse chunk a block; Ray Data's 128 MiB is several times that in pandas


def first_reason(reason_arrays: list[np.ndarray], n: int) -> np.ndarray:
    """Per row, the first non-empty reason over the steps (steps run in order)."""
    out = np.full(n, "", dtype=object)
    for reasons in reason_arrays:
        empty = out == ""
        out[empty] = np.asarray(reasons, dtype=object)[empty]
    return out


def annotate_batch(batch, steps: list[Step], dedup_keys: list[str] | None = None):
    """Runs the steps in order and adds the `reason` column (and the key hash for de-duplication)."""
    n = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
    step_reasons = []
    for step in steps:
        batch, reasons = step(batch)
        step_reasons.append(reasons)
    reasons = first_reason(step_reasons, n)
    if isinstance(batch, dict):
        batch[REASON_COLUMN] = reasons.astype(str)
    else:
        batch[REASON_COLUMN] = pd.array(reasons.astype(str), dtype="string")
    if dedup_keys:
        batch[DEDUP_HASH] = key_hash(batch, dedup_keys)
    return batch


def key_hash(batch, keys: list[str]) -> np.ndarray:
    """uint64 per row from its key values (0 where one is missing): table columns as pandas hashes
    them, array columns (images) by their bytes."""
    n = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
    combined = np.zeros(n, np.uint64)
    missing = np.zeros(n, bool)
    for key in keys:
        values = batch[key]
        array = values if isinstance(values, np.ndarray) else None
        if array is not None and (array.ndim > 1 or array.dtype == object and n and isinstance(array[0], np.ndarray)):
            hashes = array_row_hash(array)
        else:
            column = pd.Series(values)
            missing |= column.isna().to_numpy(dtype=bool)
            hashes = stable_hash(column.to_frame(), 0)
        with np.errstate(over="ignore"):
            combined = (combined ^ hashes) * HASH_PRIME
    combined[combined == 0] = 1
    combined[missing] = 0
    return combined


def array_row_hash(array: np.ndarray) -> np.ndarray:
    """A hash of each row's shape, dtype and bytes (rows may be ragged: an object array of arrays)."""
    rows = array if array.dtype == object else list(array)
    described = [f"{row.dtype.str}{row.shape}".encode() + np.ascontiguousarray(row).tobytes() for row in rows]
    return pd.util.hash_array(np.array(described, dtype=object), hash_key="0" * 16)


@dataclass
class CleanResult:
    kept: Any  # ray.data.Dataset without the reason column
    quarantined: Any  # ray.data.Dataset with the reason column
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    annotated: Any = None  # every row with its reason (materialised, or lazy when streamed), for report statistics
    statistics: dict[str, list[dict]] = field(default_factory=dict)  # the caller's `statistics`, per block
    quarantine_path: str | None = None  # where the rejected rows were written (`clean_dataset`'s `quarantine_uri`)

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_by_reason": dict(sorted(self.reasons.items())),
        }


def clean_dataset(ds, steps: list[Step], batch_format: str = "pandas", dedup_keys: list[str] | None = None,
                  statistics: dict[str, Statistic] | None = None, materialize: bool = True,
                  quarantine_uri: str | None = None) -> CleanResult:
    """Annotates each row with its reason, de-duplicates, and splits kept rows from quarantined ones.

    `materialize`: the annotated rows are kept in the object store after one read of `ds` (fast; memory
    grows with the data), or, False, streamed: this pass keeps only per-block statistics, and each later
    use of `kept` or `quarantined` reads and annotates `ds` again (memory stays flat; CPU per pass).
    `statistics`: more per-block statistics of the annotated rows (e.g. the report's null counts, or
    features fitted on the kept rows), gathered in the same pass as the reason counts (each Ray Data
    execution has a fixed cost, and a streamed one a read of the source).
    `quarantine_uri`: where to write the rejected rows (`pipeline.data.quarantine`), in the pass that
    gathers the statistics."""
    if not materialize:  # every pass over `ds` and what derives from it: small blocks, so each task's memory stays small
        context = ds.context
        context.target_max_block_size = min(context.target_max_block_size or STREAM_BLOCK_BYTES, STREAM_BLOCK_BYTES)
    annotated = ds.map_batches(annotate_batch, fn_args=(steps, dedup_keys), batch_format=batch_format,
                               batch_size=None)  # whole blocks: vectorised steps, fewer calls
    if materialize:
        annotated = annotated.materialize()
    if dedup_keys:
        annotated = mark_duplicates(annotated, materialize)
    wanted = {"reasons": ([REASON_COLUMN], reason_counts), **(statistics or {})}
    gathered = cleaning_pass(annotated, wanted, quarantine_uri) if materialize else None
    sink = None
    if gathered is None:  # streamed (or lazy after de-duplication): one Ray Data pass, the rejected rows written as they go by
        sink = CleaningPassSink(wanted, quarantine_uri)
        annotated.write_datasink(sink)
        gathered = dict(sink.statistics)
    reasons: dict[str, int] = {}
    for part in gathered.pop("reasons"):
        for reason, n in part.items():
            reasons[reason] = reasons.get(reason, 0) + n
    rows_in = sum(reasons.values())
    rows_kept = reasons.pop("", 0)
    kept = annotated.filter(expr=f"{REASON_COLUMN} == ''").drop_columns([REASON_COLUMN])
    quarantined = annotated.filter(expr=f"{REASON_COLUMN} != ''")
    if sink is not None and quarantine_uri:
        sink.join_parts(dataset_schema(annotated) if not rows_in - rows_kept else None)
    return CleanResult(kept, quarantined, rows_in, rows_kept, rows_in - rows_kept, reasons, annotated, gathered, quarantine_uri)


def streaming_reason(data) -> str:
    """Why cleaning should stream `data.source` (a DataConfig) rather than keep the cleaned rows in
    memory; "" when it should keep them: a small source is read once, a large one in flat memory."""
    from pipeline.data.ingest import source_bytes

    if data.stream_above_mb == 0:
        return "data.stream_above_mb is 0"
    size = source_bytes(data.source, data.test_source)
    return f"source {size / 2**20:,.0f} MiB > data.stream_above_mb {data.stream_above_mb:g}" if size > data.stream_above_mb * 2**20 else ""


def kept_rows(statistic: Statistic) -> Statistic:
    """`statistic` over the rows that pass cleaning only: for `clean_dataset`'s `statistics`, e.g. to
    fit features on the kept rows in the cleaning pass."""
    columns, partial = statistic
    return [*columns, REASON_COLUMN], lambda batch: partial(batch[batch[REASON_COLUMN] == ""])


def reason_counts(batch: pd.DataFrame) -> dict[str, int]:
    counts = batch[REASON_COLUMN].value_counts(dropna=False)
    return {str(k): int(v) for k, v in counts.items()}


def mark_duplicates(annotated, materialize: bool = True):
    """Quarantines all but the first row (in file and line order, when known) of each key.

    Only the key hashes of valid rows travel to the driver; rows whose key repeats (usually few)
    are resolved there and the rest of the data never leaves the object store (or, `materialize`
    False, is read again by each use of the result).
    """
    import ray.data

    batches = local_batches(annotated, "pandas", [REASON_COLUMN, DEDUP_HASH])
    if batches is None:
        valid = annotated.filter(expr=f"{REASON_COLUMN} == ''").select_columns([DEDUP_HASH]).to_pandas()
    else:  # small: read in the driver
        valid = pd.concat([b.loc[b[REASON_COLUMN] == "", [DEDUP_HASH]] for b in batches]) if batches else pd.DataFrame()
    hashes = valid[DEDUP_HASH] if DEDUP_HASH in valid else pd.Series([], dtype=np.uint64)
    hashes = hashes[hashes != 0]  # no complete key: never a duplicate
    repeated = np.unique(hashes[hashes.duplicated()].to_numpy(np.uint64))
    if not len(repeated):
        return annotated.drop_columns([DEDUP_HASH])

    def is_repeated(batch: pd.DataFrame) -> np.ndarray:
        return np.isin(batch[DEDUP_HASH].to_numpy(np.uint64), repeated) & (batch[REASON_COLUMN] == "").to_numpy(dtype=bool)

    unique = annotated.map_batches(lambda b: b[~is_repeated(b)], batch_format="pandas")
    dups = annotated.map_batches(lambda b: b[is_repeated(b)], batch_format="pandas").to_pandas()
    order = [c for c in ("_source", "_record") if c in dups.columns]
    dups = dups.sort_values([DEDUP_HASH, *order], kind="stable") if order else dups
    later = dups[DEDUP_HASH].duplicated().to_numpy()
    reasons = dups[REASON_COLUMN].to_numpy(dtype=object)
    reasons[later] = "duplicate"
    dups[REASON_COLUMN] = pd.array(reasons.astype(str), dtype="string")
    # Through Arrow's own conversion: Ray Data's would pickle a column that `to_pandas` left as objects
    # (a datetime column with None in it), and the quarantine file would hold it unreadable.
    marked = unique.union(ray.data.from_arrow(pa.Table.from_pandas(dups, preserve_index=False))).drop_columns([DEDUP_HASH])
    return marked.materialize() if materialize else marked


def value_counts(ds, column: str) -> dict:
    """Counts of each value of `column` (as text), computed per block and summed in the driver."""

    def count(batch: pd.DataFrame) -> dict[str, int]:
        counts = batch[column].value_counts(dropna=False)
        return dict(zip(counts.index.astype(str), counts.tolist()))

    totals: dict[str, int] = {}
    for part in fit_partials(ds, count, columns=[column]):
        for value, n in part.items():
            totals[value] = totals.get(value, 0) + n
    return dict(sorted(totals.items()))


def null_statistic(columns: list[str]) -> Statistic:
    """Missing values per column in the input ("?" and blanks included), not counting rows the reader
    could not parse or values that failed type coercion (those have their own reasons): a statistic
    for `clean_dataset`, summed over blocks by `sum_partials`."""

    def partial(batch: pd.DataFrame) -> dict:
        reasons = batch[REASON_COLUMN].astype(str)
        parsed = reasons != "malformed_row"
        return {c: int((batch[c].isna() & parsed & (reasons != f"type:{c}")).sum()) for c in columns}

    return [*columns, REASON_COLUMN], partial


def sum_partials(partials: list[dict], keys: list[str]) -> dict[str, int]:
    return {k: sum(p[k] for p in partials) for k in keys}
