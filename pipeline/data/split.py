"""Deterministic train/val/test splits: random, stratified, grouped, temporal, leave-last-out.

Each row's place comes from a hash of its key columns and the seed, never from its position, so a
split does not change with block count, worker count or file order. Rows with equal keys (and, for
grouped splits, rows of one group) always land in the same split.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.config import SplitConfig
from pipeline.data.local import StaleNoCpuWarning, is_small, local_blocks, to_pandas
from pipeline.data.schema import dataset_columns
from pipeline.errors import DataError

SPLITS = ("train", "val", "test")
HASH_COLUMN = "_split_hash"
SPLIT_COLUMN = "_split"
HOLDOUT_COLUMN = "_holdout"  # rows of a separate test source: always test


def stable_hash(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """uint64 per row from its values and the seed; the same on every machine and Python run."""
    return pd.util.hash_pandas_object(frame, index=False, hash_key=f"{seed:016d}"[-16:]).to_numpy()


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign_by_threshold(u: np.ndarray, ratios: list[float]) -> np.ndarray:
    """0/1/2 (train/val/test) for values in [0, 1) by cumulative ratios."""
    return np.searchsorted(np.cumsum(ratios[:2]), u, side="right").astype(np.int8)


def stratum_cutoffs(strata: np.ndarray, hashes: np.ndarray, ratios: list[float]) -> dict:
    """Per stratum, the two hash values below which rows go to train and to train+val.

    Ranking by hash inside each class gives exact class proportions in every split.
    """
    cutoffs = {}
    order = np.lexsort((hashes, strata))
    strata_sorted, hashes_sorted = strata[order], hashes[order]
    bounds = np.flatnonzero(np.r_[True, strata_sorted[1:] != strata_sorted[:-1], True])
    for start, stop in zip(bounds[:-1], bounds[1:]):
        group = hashes_sorted[start:stop]
        n = len(group)
        n_train = int(round(ratios[0] * n))
        n_val = int(round((ratios[0] + ratios[1]) * n)) - n_train
        edges = [n_train, n_train + n_val]
        # A cutoff is the first hash that belongs to the next split (max+1 means "everything").
        cut = [int(group[e]) if e < n else 2**64 - 1 for e in edges]
        key = strata_sorted[start]
        cutoffs[key.item() if hasattr(key, "item") else key] = cut
    return cutoffs


def assign_by_cutoffs(strata: np.ndarray, hashes: np.ndarray, cutoffs: dict) -> np.ndarray:
    out = np.full(len(hashes), 2, dtype=np.int8)
    for stratum, (c_train, c_val) in cutoffs.items():
        mask = strata == stratum
        h = hashes[mask]
        out[mask] = np.where(h < np.uint64(c_train), 0, np.where(h < np.uint64(c_val), 1, 2))
    return out


def time_cutoffs(times: np.ndarray, ratios: list[float]) -> list:
    ordered = np.sort(times)
    n = len(ordered)
    idx = [int(round(ratios[0] * n)), int(round((ratios[0] + ratios[1]) * n))]
    return [ordered[i] if i < n else None for i in idx]


def last_rows_per_group(frame: pd.DataFrame, group: str, time: str) -> pd.DataFrame:
    """Per group, the (time, hash) of its last and second-to-last rows (ties broken by hash)."""
    ordered = frame.sort_values([group, time, HASH_COLUMN], kind="stable")
    rank = ordered.groupby(group, sort=False).cumcount(ascending=False)
    picked = ordered[rank < 2].assign(position=rank[rank < 2])  # 0 = last (test), 1 = second to last (val)
    return picked.set_index([group, "position"])[[time, HASH_COLUMN]]


def assign_leave_last_out(batch: pd.DataFrame, group: str, time: str, last_two: pd.DataFrame) -> np.ndarray:
    out = np.zeros(len(batch), dtype=np.int8)
    key = pd.MultiIndex.from_arrays([batch[group].to_numpy(), batch[HASH_COLUMN].to_numpy(np.uint64)])
    for position, split in ((1, 1), (0, 2)):
        chosen = last_two.xs(position, level="position")
        marks = pd.MultiIndex.from_arrays([chosen.index.to_numpy(), chosen[HASH_COLUMN].to_numpy(np.uint64)])
        out[key.isin(marks)] = split
    return out


def split_dataset(ds, cfg: SplitConfig, seed: int) -> dict:
    """Splits a Ray Dataset into {"train", "val", "test"} materialised Ray Datasets.

    One pass over `ds` assigns each row its split (over its rows with their hashes, materialised first,
    when the cut points of a stratified or leave-last-out split need them): small hashed rows are then
    cut in the driver (`split_locally`), others block by block as the pass puts them out
    (`split_in_tasks`), so a streamed source is read once, not once a split."""
    method = cfg.method
    all_columns = dataset_columns(ds)  # a lazy source's look reads a block: once
    columns = set(all_columns)
    needed = {"random": cfg.key, "stratified": cfg.key + [cfg.stratify], "grouped": [cfg.group], "temporal": [cfg.time],
              "leave_last_out": cfg.key + [cfg.group, cfg.time]}[method]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"split method {method!r} needs column(s) {', '.join(missing)}, not in the data ({', '.join(sorted(columns))})")

    # No key: every data column (not the reader's `_source`, `_record`... which differ between copies of a row).
    hash_columns = [cfg.group] if method == "grouped" else (cfg.key or [c for c in all_columns if not c.startswith("_")])
    has_holdout = HOLDOUT_COLUMN in columns
    ratios = list(cfg.ratios)
    if has_holdout:  # a separate test source is the test split; train and val share the rest
        share = ratios[0] + ratios[1]
        ratios = [ratios[0] / share, ratios[1] / share, 0.0]

    def add_hash(batch: pd.DataFrame) -> pd.DataFrame:
        batch[HASH_COLUMN] = stable_hash(batch[hash_columns], seed)
        return batch

    hashed = ds.map_batches(add_hash, batch_format="pandas") if method != "temporal" else ds
    if method in ("random", "grouped"):

        def assign(batch: pd.DataFrame) -> pd.DataFrame:
            batch[SPLIT_COLUMN] = assign_by_threshold(unit_interval(batch[HASH_COLUMN].to_numpy()), ratios)
            return batch.drop(columns=[HASH_COLUMN])

    elif method == "stratified":
        hashed = hashed.materialize()  # hashed once, read by the cut points' pass and each split's
        # Only two narrow columns travel to the driver to find per-class cut points.
        keys = to_pandas(hashed, [cfg.stratify, HASH_COLUMN, *([HOLDOUT_COLUMN] if has_holdout else [])])
        if has_holdout:
            keys = keys[~keys[HOLDOUT_COLUMN].astype(bool)]
        cutoffs = stratum_cutoffs(keys[cfg.stratify].to_numpy(), keys[HASH_COLUMN].to_numpy(np.uint64), ratios)
        stratify = cfg.stratify

        def assign(batch: pd.DataFrame) -> pd.DataFrame:
            batch[SPLIT_COLUMN] = assign_by_cutoffs(batch[stratify].to_numpy(), batch[HASH_COLUMN].to_numpy(np.uint64), cutoffs)
            return batch.drop(columns=[HASH_COLUMN])

    elif method == "leave_last_out":
        # Per group (user): the last row in time is test, the one before it val, the rest train.
        hashed = hashed.materialize()
        frame = to_pandas(hashed, [cfg.group, cfg.time, HASH_COLUMN])
        last_two = last_rows_per_group(frame, cfg.group, cfg.time)
        group_col, time_col = cfg.group, cfg.time

        def assign(batch: pd.DataFrame) -> pd.DataFrame:
            batch[SPLIT_COLUMN] = assign_leave_last_out(batch, group_col, time_col, last_two)
            return batch.drop(columns=[HASH_COLUMN])

    else:  # temporal: oldest rows train, newest test
        frame = to_pandas(hashed, [cfg.time, *([HOLDOUT_COLUMN] if has_holdout else [])])
        times = (frame[~frame[HOLDOUT_COLUMN].astype(bool)] if has_holdout else frame)[cfg.time].to_numpy()
        c_train, c_val = time_cutoffs(times, ratios)
        time_col = cfg.time

        def assign(batch: pd.DataFrame) -> pd.DataFrame:
            t = batch[time_col].to_numpy()
            out = np.full(len(t), 2, dtype=np.int8)
            if c_val is not None:
                out[t < c_val] = 1
            else:
                out[:] = 1
            if c_train is not None:
                out[t < c_train] = 0
            else:
                out[:] = 0
            batch[SPLIT_COLUMN] = out
            return batch

    def assign_with_holdout(batch: pd.DataFrame) -> pd.DataFrame:
        batch = assign(batch)
        if has_holdout:
            held = batch[HOLDOUT_COLUMN].to_numpy(dtype=bool)
            batch[SPLIT_COLUMN] = np.where(held, 2, batch[SPLIT_COLUMN].to_numpy()).astype(np.int8)
        return batch

    labelled = hashed.map_batches(assign_with_holdout, batch_format="pandas")
    if is_small(hashed):  # assigned once, cut in the driver
        return split_locally(labelled.materialize())
    return split_in_tasks(labelled)


def split_locally(labelled) -> dict:
    """The splits of a small materialised dataset with its split column, cut block by block in the driver:
    the blocks Ray Data's filter makes (one per input block, in order), without three executions."""
    import ray.data

    parts = [cut_block(block) for block in local_blocks(labelled, limit=math.inf)]
    parts = [part for part in parts if part is not None]  # an empty block may lack the columns
    return {name: ray.data.from_arrow([part[i] for part in parts]) for i, name in enumerate(SPLITS)}


def split_in_tasks(labelled, in_flight: int = 8) -> dict:
    """The splits of `labelled` (rows with their split column) in one pass: each block, as the pass puts it
    out, is cut into its three parts by a plain Ray task, where three filters would run the pass (for a
    streamed source: read and clean it) three times. At most `in_flight` cuts wait, so the pass's blocks
    do not pile up in memory ahead of them."""
    import ray
    import ray.data

    cut = ray.remote(num_returns=len(SPLITS))(cut_block_or_empty)
    parts: list[list] = [[] for _ in SPLITS]
    waiting: list = []
    for bundle in labelled.iter_internal_ref_bundles():
        for ref in bundle.block_refs:
            pieces = cut.remote(ref)
            for part, piece in zip(parts, pieces):
                part.append(piece)
            waiting.append(pieces[0])
            if len(waiting) >= in_flight:
                _, waiting = ray.wait(waiting, num_returns=len(waiting) - in_flight + 1)
    StaleNoCpuWarning.after_own_tasks()
    return {name: ray.data.from_arrow_refs(part) if part else ray.data.from_arrow([]) for name, part in zip(SPLITS, parts)}


def cut_block(block) -> list | None:
    """A block with its split column as the rows of each split (Arrow tables, in split order, possibly
    empty); None for an empty block."""
    import pyarrow.compute as pc
    from ray.data.block import BlockAccessor

    table = BlockAccessor.for_block(block).to_arrow()
    if not table.num_rows:
        return None
    return [table.filter(pc.equal(table[SPLIT_COLUMN], i)).drop_columns([SPLIT_COLUMN]) for i in range(len(SPLITS))]


def cut_block_or_empty(block) -> tuple:
    """`cut_block` for a task, which must return three values: an empty block gives itself three times
    (without the split column, when it has one)."""
    from ray.data.block import BlockAccessor

    parts = cut_block(block)
    if parts is not None:
        return tuple(parts)
    table = BlockAccessor.for_block(block).to_arrow()
    return (table.drop_columns([SPLIT_COLUMN]) if SPLIT_COLUMN in table.column_names else table,) * len(SPLITS)
