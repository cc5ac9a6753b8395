"""The quarantine: every rejected row with its `reason`, one Parquet file in a directory (an empty file
with the schema when no row was rejected), so it is always there to look at.

Cleaned rows kept in memory: written from them after cleaning (`write_quarantine`). Streamed: the
cleaning pass itself writes each task's rejected rows to a file of its own, named by the task's index
(a retried task overwrites its own file), and returns its blocks' statistics (`CleaningPassSink`). The
driver then joins those files into one, file by file, so the quarantine costs no extra read of the source.
"""

from __future__ import annotations

import json
import posixpath
from typing import Iterable

from ray.data.datasource import Datasink

from pipeline import storage
from pipeline.data.features import Statistic, combined
from pipeline.data.local import as_batch

REASON_COLUMN = "reason"
QUARANTINE_FILE = "quarantine.parquet"
PARTS_DIR = "_parts"  # inside the quarantine directory while the pass runs: readers skip names starting with "_"


def write_quarantine(quarantined, rows: int, schema, uri: str) -> str:
    """`quarantined` (a dataset of `rows` rejected rows) as one Parquet file under `uri`; with none, an
    empty file with `schema` (the annotated rows')."""
    storage.delete_dir(uri)
    if rows:
        quarantined.repartition(1).write_parquet(uri)
        return uri
    write_empty(uri, schema)
    return uri


def write_empty(uri: str, schema) -> None:
    """An empty quarantine file with `schema` (Arrow, or Ray Data's wrapper of it)."""
    import pyarrow.parquet as pq

    storage.make_dirs(uri)
    fs, path = storage.filesystem(storage.join(uri, QUARANTINE_FILE))
    pq.write_table(getattr(schema, "base_schema", schema).empty_table(), path, filesystem=fs)


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
        from ray.data.block import BlockAccessor

        statistics, rejected = [], None
        for block in blocks:
            batch = as_batch(block, "pandas", self.columns)
            if batch is None:
                continue
            statistics.append(json.loads(json.dumps(self.partial(batch))))  # JSON round trip: as `fit_partials` returns them
            rows = rejected_rows(block) if self.uri else None
            if rows is not None:
                if rejected is None:  # Ray's own concatenation: column types unified across blocks as Ray Data does
                    rejected = BlockAccessor.for_block(rows).builder()
                rejected.add_block(rows)
        if rejected is not None:
            import pyarrow.parquet as pq

            fs, path = storage.filesystem(storage.join(self.uri, PARTS_DIR, f"part-{ctx.task_idx:06d}.parquet"))
            pq.write_table(rejected.build(), path, filesystem=fs)
        return {"task": ctx.task_idx, "statistics": statistics}

    def on_write_complete(self, write_result) -> None:
        blocks = [block for r in sorted(write_result.write_returns, key=lambda r: r["task"]) for block in r["statistics"]]
        self.statistics = {name: [block[name] for block in blocks] for name in self.names}

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
