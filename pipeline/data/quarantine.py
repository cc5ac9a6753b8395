"""The quarantine: every rejected row with its `reason`, one Parquet file in a directory (an empty file
with the schema when no row was rejected), so it is always there to look at.

It is written by the pass that gathers the cleaning statistics, so it costs no pass of its own. Cleaned
rows kept in memory: a plain task per block returns the block's statistics and its rejected rows, and the
driver writes those rows as one file (`cleaning_pass`). Streamed (or lazy): a Ray Data pass writes each
task's rejected rows to a file of its own, named by the task's index (a retried task overwrites its own
file), and returns its blocks' statistics (`CleaningPassSink`); the driver then joins those files into
one, file by file, so the quarantine costs no extra read of the source.
"""

from __future__ import annotations

import functools
import json
import posixpath
from typing import Iterable

from ray.data.datasource import Datasink

from pipeline import storage
from pipeline.data.features import Statistic, block_partial, by_name, combined
from pipeline.data.local import each_block
from pipeline.data.schema import dataset_schema

REASON_COLUMN = "reason"
QUARANTINE_FILE = "quarantine.parquet"
PARTS_DIR = "_parts"  # inside the quarantine directory while the pass runs: readers skip names starting with "_"


def cleaning_pass(ds, statistics: dict[str, Statistic], uri: str | None) -> dict[str, list[dict]] | None:
    """One pass over the blocks of a materialised `ds` (annotated rows): the per-block `statistics`, as
    `gather_partials` returns them, and, with `uri`, the rejected rows written there as one file. None
    when `ds` is lazy (`CleaningPassSink` then)."""
    columns, partial = combined(statistics)
    passes = each_block(ds, functools.partial(block_pass, columns, partial, bool(uri)))
    if passes is None:
        return None
    if uri:
        storage.delete_dir(uri)
        rejected = [rows for _, rows in passes if rows is not None]
        if rejected:
            write_one(uri, joined(rejected))
        else:
            write_empty(uri, dataset_schema(ds))
    return by_name([stats for stats, _ in passes if stats is not None], list(statistics))


def block_pass(columns: list[str], partial, keep_rejected: bool, block) -> tuple[dict | None, object]:
    """A block's statistics (`partial` of its `columns`; None when the block is empty) and, when
    `keep_rejected`, its rejected rows (an Arrow table; None when there are none)."""
    statistics = block_partial(partial, "pandas", columns, block)
    if statistics is None:
        return None, None
    return json.loads(statistics), rejected_rows(block) if keep_rejected else None  # JSON round trip: as `fit_partials` returns them


def joined(tables: list):
    """Arrow tables as one, column types unified as Ray Data unifies blocks (a column all null in one
    table takes the others' type)."""
    from ray.data.block import BlockAccessor

    builder = BlockAccessor.for_block(tables[0]).builder()
    for table in tables:
        builder.add_block(table)
    return builder.build()


def write_one(uri: str, table) -> None:
    import pyarrow.parquet as pq

    storage.make_dirs(uri)
    fs, path = storage.filesystem(storage.join(uri, QUARANTINE_FILE))
    pq.write_table(table, path, filesystem=fs)


def write_empty(uri: str, schema) -> None:
    """An empty quarantine file with `schema` (Arrow, or Ray Data's wrapper of it)."""
    write_one(uri, getattr(schema, "base_schema", schema).empty_table())


def rejected_rows(block):
    """The rows of `block` (Arrow or pandas, as the cleaning step left it) with a reason, as an Arrow table;
    None when there are none. Only those rows are converted."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from ray.data.block import BlockAccessor

    if isinstance(block, pa.Table):
        rows = block.filter(pc.not_equal(block[REASON_COLUMN], ""))
    else:
        rows = BlockAccessor.for_block(block[(block[REASON_COLUMN] != "").to_numpy(dtype=bool)].reset_index(drop=True)).to_arrow()
    return rows if rows.num_rows else None


class CleaningPassSink(Datasink):
    """A pass over annotated rows that gathers per-block `statistics` (name -> (columns, partial), as
    `gather_partials`) and, when `uri` is set, writes the rejected rows under it: one pass and one read
    of the source where a streamed source took three. `statistics` holds the gathered partials after
    the pass, in block order."""

    def __init__(self, statistics: dict[str, Statistic], uri: str | None = None):
        self.names, self.uri = list(statistics), uri
        self.columns, self.partial = combined(statistics)
        self.statistics: dict[str, list[dict]] = {}

    def get_name(self) -> str:
        return "CleaningPass"

    def on_write_start(self, schema=None) -> None:
        if self.uri:
            storage.delete_dir(self.uri)
            storage.make_dirs(storage.join(self.uri, PARTS_DIR))

    def write(self, blocks: Iterable, ctx) -> dict:
        import pyarrow.parquet as pq

        statistics, rejected = [], []
        for block in blocks:
            stats, rows = block_pass(self.columns, self.partial, bool(self.uri), block)
            if stats is not None:
                statistics.append(stats)
            if rows is not None:
                rejected.append(rows)
        if rejected:
            fs, path = storage.filesystem(storage.join(self.uri, PARTS_DIR, f"part-{ctx.task_idx:06d}.parquet"))
            pq.write_table(joined(rejected), path, filesystem=fs)
        return {"task": ctx.task_idx, "statistics": statistics}

    def on_write_complete(self, write_result) -> None:
        blocks = [block for r in sorted(write_result.write_returns, key=lambda r: r["task"]) for block in r["statistics"]]
        self.statistics = by_name(blocks, self.names)

    def join_parts(self, schema) -> str:
        """The tasks' files joined into one in task order, one file in memory at a time, then removed; their
        types unified as Ray Data unifies blocks (a column all null in one file takes the others' type). No
        file: an empty one with `schema` (the annotated rows')."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = storage.join(self.uri, PARTS_DIR)
        names = sorted(name for name in storage.list_files(parts) if name.endswith(".parquet"))
        if names:
            fs, path = storage.filesystem(parts)
            files = [posixpath.join(path, name) for name in names]
            schema = pa.unify_schemas([pq.read_schema(f, filesystem=fs) for f in files], promote_options="permissive")
            out_fs, out_path = storage.filesystem(storage.join(self.uri, QUARANTINE_FILE))
            with pq.ParquetWriter(out_path, schema, filesystem=out_fs) as writer:
                for f in files:
                    writer.write_table(pq.read_table(f, filesystem=fs).select(schema.names).cast(schema))
        else:
            write_empty(self.uri, schema)
        storage.delete_dir(parts)
        return self.uri
