"""Materialised datasets read without a Ray Data execution.

Every Ray Data execution costs 0.2-1 s even on a few thousand rows (a task per block, the streaming
executor's start and stop); a run made about twenty of them only to gather statistics, count classes and
score held-out rows. A materialised dataset's blocks are already in the object store, so the driver can
read them directly: the same blocks in the same order, hence the same numbers. Only up to `LOCAL_BYTES`,
and only for reading (statistics, counts, scoring) and for cutting small data into its splits
(`split.split_locally`). A larger materialised dataset's per-block statistics run as plain Ray tasks,
one per block, where the block lies (`each_block`). Lazy data, and every other transformation, still run
as Ray Data tasks on the cluster.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

LOCAL_BYTES = 64 * 2**20


def is_small(ds, limit: float = LOCAL_BYTES) -> bool:
    """`ds` is materialised and holds at most `limit` bytes (its blocks' metadata; nothing is fetched)."""
    from ray.data.dataset import MaterializedDataset

    return isinstance(ds, MaterializedDataset) and ds.size_bytes() <= limit


def block_refs(ds) -> list | None:
    """The object references of `ds`'s blocks in order when it is materialised, else None."""
    from ray.data.dataset import MaterializedDataset

    if not isinstance(ds, MaterializedDataset):
        return None
    return [ref for bundle in ds.iter_internal_ref_bundles() for ref in bundle.block_refs]


def local_blocks(ds, limit: float = LOCAL_BYTES) -> list | None:
    """The blocks of `ds` in order when it `is_small`, else None."""
    import ray

    return ray.get(block_refs(ds)) if is_small(ds, limit) else None


def as_batch(block, batch_format: str, columns: list[str] | None = None):
    """A non-empty block as the batch `map_batches(batch_size=None)` hands its function (None when empty:
    an empty block may lack the columns, and Ray Data calls no function on it)."""
    from ray.data.block import BlockAccessor

    accessor = BlockAccessor.for_block(block)
    if not accessor.num_rows():
        return None
    if columns is not None:
        accessor = BlockAccessor.for_block(accessor.select(columns))
    return accessor.to_batch_format(batch_format)


def each_block(ds, fn, limit: float = LOCAL_BYTES) -> list | None:
    """`fn(block)` of each block of a materialised `ds`, in block order: in the driver when `ds` is small
    (`limit`), else one plain Ray task a block, where the block lies (half the time of a Ray Data
    execution over the same blocks, measured on 1M rows); None when `ds` is lazy."""
    import ray

    blocks = local_blocks(ds, limit)
    if blocks is not None:
        return [fn(block) for block in blocks]
    refs = block_refs(ds)
    if refs is None:
        return None
    run = ray.remote(num_cpus=1)(call)
    fn_ref = ray.put(fn)  # one copy of the function (and whatever it closes over) for every task
    results = ray.get([run.remote(fn_ref, ref) for ref in refs])
    StaleNoCpuWarning.after_own_tasks()
    return results


def call(fn, block):
    return fn(block)


def local_batches(ds, batch_format: str, columns: list[str] | None = None, limit: float = LOCAL_BYTES) -> list[Any] | None:
    """Each non-empty block of a small materialised `ds` as one batch (what `map_batches(batch_size=None)`
    hands its function), restricted to `columns` when given; None when `ds` is lazy or large."""
    blocks = local_blocks(ds, limit)
    if blocks is None:
        return None
    return [batch for batch in (as_batch(block, batch_format, columns) for block in blocks) if batch is not None]


def rebatched(batches: list[Any], batch_size: int) -> Iterator[Any]:
    """`batches` (pandas frames, or dicts of NumPy arrays) cut again into batches of `batch_size` rows
    across their boundaries, the last one shorter: what `iter_batches(batch_size=...)` yields."""
    import numpy as np
    import pandas as pd

    if not batches:
        return
    if isinstance(batches[0], pd.DataFrame):
        whole = pd.concat(batches, ignore_index=True)
        for start in range(0, len(whole), batch_size):
            yield whole.iloc[start:start + batch_size].reset_index(drop=True)
        return
    whole = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    rows = len(next(iter(whole.values())))
    for start in range(0, rows, batch_size):
        yield {key: values[start:start + batch_size] for key, values in whole.items()}


def to_pandas(ds, columns: list[str] | None = None):
    """`ds` (only `columns`, when given) as one pandas DataFrame: read in the driver when small and
    materialised, else through Ray Data's `to_pandas`."""
    import pandas as pd

    batches = local_batches(ds, "pandas", columns)
    if batches is None:
        return (ds.select_columns(columns) if columns is not None else ds).to_pandas()
    if not batches:
        return pd.DataFrame(columns=columns)
    return pd.concat(batches, ignore_index=True)


class StaleNoCpuWarning(logging.Filter):
    """Drops Ray Data's "no available CPUs ... the Dataset job will hang" warning for a moment after the
    pipeline's own plain tasks (line counts, per-block statistics, split cuts): it reads the cluster's
    resource view, which still showed their CPUs in use (for about half a second on a fresh Ray) when
    the next Ray Data execution started, so runs printed it though nothing waited. Any other time it
    passes."""

    MESSAGE = "does not have any available CPUs"
    SECONDS = 2.0
    until = 0.0

    @classmethod
    def after_own_tasks(cls) -> None:
        cls.until = time.monotonic() + cls.SECONDS
        logger = logging.getLogger("ray.data.dataset")
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        return not (time.monotonic() < self.until and self.MESSAGE in record.getMessage())
