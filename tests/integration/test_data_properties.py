"""Property-based, on the session's Ray: dirty CSV tables split across 1 to 4 files and read with block
sizes from 1 KiB to 16 MiB (and files cut into byte ranges of 512 bytes to whole) go through ingest and cleaning (its
rows kept in memory or streamed); every record is counted, kept or quarantined,
and each quarantined row's reason is the one a plain-Python oracle of the rules gives (tests/dirty_csv.py),
in the result and in the quarantine file written.
Examples are few (each runs Ray Data end to end) and derandomized, so CI runs the same ones every time."""

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ColumnRules, TableOptions
from pipeline.data.clean import clean_dataset
from pipeline.data.ingest import read_dataset
from pipeline.data.rules import RuleStep, TypeStep, infer_datetime_formats

from tests.dirty_csv import ALLOWED_CITIES, NA_VALUES, SCHEMA, dirty_lines, oracle_reasons, split_files

pytestmark = pytest.mark.usefixtures("ray_session")

RULES = {"age": ColumnRules(range={"gt": 0, "le": 120}), "score": ColumnRules(required=True),
         "city": ColumnRules(allowed=ALLOWED_CITIES)}


def clean_files(files: list[bytes], block_bytes: int, ray_block_bytes: int, range_bytes: int | None = None, materialize: bool = True):
    from ray.data import DataContext

    folder = Path(tempfile.mkdtemp(prefix="dirty-csv-"))
    for i, data in enumerate(files):
        (folder / f"part-{i}.csv").write_bytes(data)
    options = TableOptions(na_values=NA_VALUES)
    context = DataContext.get_current()
    saved = context.target_max_block_size
    context.target_max_block_size = ray_block_bytes
    try:
        ds = read_dataset(str(folder), "csv", options, SCHEMA, block_bytes=block_bytes, range_bytes=range_bytes)
        data_cfg = SimpleNamespace(columns=SCHEMA, datetime_formats={}, options=options)
        formats = infer_datetime_formats(ds, data_cfg)
        steps = [TypeStep(SCHEMA, NA_VALUES, formats), *(RuleStep(c, r) for c, r in RULES.items())]
        quarantine = tempfile.mkdtemp(prefix="quarantine-")
        result = clean_dataset(ds, steps, "pandas", ["id"], materialize=materialize, quarantine_uri=quarantine)
        rows = result.annotated.select_columns(["_source", "_record", "reason"]).to_pandas()
    finally:
        context.target_max_block_size = saved
    index = {str(folder / f"part-{i}.csv"): i for i in range(len(files))}
    found = {(index[s], int(r)): str(reason) for s, r, reason in zip(rows["_source"], rows["_record"], rows["reason"])}
    (file,) = os.listdir(quarantine)  # one file (with the schema when empty), no leftovers
    pickled = [f.name for f in pq.read_schema(os.path.join(quarantine, file)) if isinstance(f.type, pa.ExtensionType)]
    assert not pickled, f"columns stored as pickled objects: {pickled}"  # readable by any Parquet reader
    written = pd.read_parquet(quarantine)
    written = {(index[s], int(r)): str(reason) for s, r, reason in zip(written["_source"], written["_record"], written["reason"])}
    return result, found, formats, written


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(dirty_lines(), st.integers(1, 4), st.sampled_from([1 << 10, 4 << 10, 64 << 10, 16 << 20]),
       st.sampled_from([4 << 10, 128 << 20]), st.sampled_from([512, None]), st.booleans())
def test_every_record_is_kept_or_quarantined_for_the_oracles_reason(lines, parts, block_bytes, ray_block_bytes, range_bytes, materialize):
    """Cleaned rows kept in memory or streamed (each use reads the files again): the same records."""
    files = split_files(lines, parts)
    expected = oracle_reasons(files)
    result, found, _, written = clean_files(files, block_bytes, ray_block_bytes, range_bytes, materialize)
    assert result.rows_in == len(expected)  # the independent reader's record count
    assert result.rows_kept + result.rows_quarantined == result.rows_in
    assert len(found) == len(expected)  # no record twice, none lost
    assert found == expected
    assert written == {key: reason for key, reason in expected.items() if reason}  # the file holds them all
    if not materialize:  # a streamed result read again: the same split between kept and quarantined
        assert (result.kept.count(), result.quarantined.count()) == (result.rows_kept, result.rows_quarantined)


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(dirty_lines().filter(lambda ls: len(ls) >= 20))
def test_results_do_not_depend_on_files_or_blocks(lines):
    """One dirty table cut into 1, 3 and 4 files, read with small and large blocks, a file read whole or in
    byte ranges by several tasks: the same reasons for every data row, and the same datetime format."""
    outcomes = []
    for parts, block_bytes, ray_block_bytes, range_bytes in ((1, 16 << 20, 128 << 20, None), (1, 1 << 10, 4 << 10, 300),
                                                             (3, 1 << 10, 4 << 10, None), (4, 4 << 10, 128 << 20, 700)):
        _, found, formats, _ = clean_files(split_files(lines, parts), block_bytes, ray_block_bytes, range_bytes)
        # Record 0 of each file is the valid row split_files adds; the rest, in file order, is the table.
        data_rows = [found[key] for key in sorted(found) if key[1] != 0]
        outcomes.append((data_rows, formats))
    assert outcomes[0] == outcomes[1] == outcomes[2] == outcomes[3]
