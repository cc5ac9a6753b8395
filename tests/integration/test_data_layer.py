"""The data stages on messy real-world input: formats, URIs, schema, rules, labeling, dedup, splits."""

import functools
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import storage
from pipeline.config import SplitConfig
from pipeline.data.split import split_dataset
from pipeline.errors import DataError
from pipeline.flow import prepare_data, run_pipeline
from pipeline.registry import Registry
from pipeline.tasks import get_task, load_config

pytestmark = pytest.mark.usefixtures("ray_session")

MESSY_CSV = """id,age,city,score,label
1,34,Paris,0.5,yes
2,41,Lyon,0.7,no
3,29,Paris
4,abc,Nice,0.1,yes
5,52,Nice,nan,no
6,-5,Lyon,0.2,yes
7,38,Paris,0.9,maybe
2,41,Lyon,0.7,no
8,,Lyon,0.3,no
9,60,Lyon,0.4,yes,extra
10,25,Paris,0.6,no
"""

CONFIG = {
    "data": {
        "test_source": None,
        "options": {"na_values": ["?"]},
        "schema": {"id": "int", "age": "int", "city": "category", "score": "float", "label": "string"},
        "clean": {"age": {"required": True, "range": {"gt": 0}}, "score": {"required": True},
                  "label": {"allowed": ["yes", "no"]}},
        "dedup": ["id"],
        "labeling": {},
        "split": {"method": "random", "ratios": [0.6, 0.2, 0.2], "key": ["id"], "stratify": None},
    },
    "features": {"numeric": ["age", "score"], "categorical": ["city"], "log1p": []},
}


def tabular_config(tmp_path, source, **data):
    raw = json.loads(json.dumps(CONFIG))
    raw["data"].update(source=str(source), **data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config("tabular", path, {"data.format": "auto"})


def quiet(_):
    pass


@pytest.mark.parametrize("stream_above_mb", [256, 0], ids=["in-memory", "streamed"])
def test_messy_csv_rows_are_quarantined_with_reasons(tmp_path, stream_above_mb):
    (tmp_path / "messy.csv").write_text(MESSY_CSV)
    cfg = tabular_config(tmp_path, tmp_path / "messy.csv", stream_above_mb=stream_above_mb)
    logged: list[str] = []
    prepared = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), logged.append)
    assert any("streamed, data.stream_above_mb is 0" in line for line in logged) == (stream_above_mb == 0)
    report = prepared.report
    assert report["rows_in"] == 11 == report["rows_kept"] + report["rows_quarantined"]
    assert report["quarantined_by_reason"] == {"malformed_row": 2, "type:age": 1, "type:score": 1, "range:age": 1,
                                               "allowed:label": 1, "missing:age": 1, "duplicate": 1}
    assert report["rows_kept"] == 3
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine")
    assert len(quarantine) == 8 and quarantine["reason"].notna().all()
    malformed = quarantine[quarantine["reason"] == "malformed_row"]["_malformed"].tolist()
    assert any("line 4: expected 5 fields, got 3: 3,29,Paris" in m for m in malformed)
    duplicate = quarantine[quarantine["reason"] == "duplicate"]
    assert duplicate["_record"].tolist() == [7]  # the later copy of id 2 goes; the first stays
    assert duplicate["_line"].tolist() == [9]  # records count malformed lines too; lines count the header
    on_disk = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert on_disk["nulls"]["age"] == 1
    assert sorted(prepared.clean.kept.to_pandas()["id"].tolist()) == [1, 2, 10]


def test_a_line_the_reader_cannot_parse_is_quarantined_without_a_schema_too(tmp_path):
    """No declared columns (a user's CSV read as text): the short and the long line are still quarantined,
    not kept as rows of nulls."""
    (tmp_path / "messy.csv").write_text(MESSY_CSV)
    cfg = tabular_config(tmp_path, tmp_path / "messy.csv", schema={}, clean={}, dedup=[])
    assert not cfg.data.columns
    prepared = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)
    assert prepared.report["quarantined_by_reason"] == {"malformed_row": 2}
    assert prepared.report["rows_kept"] == 9
    assert sorted(pd.read_parquet(tmp_path / "out" / "quarantine")["_line"].tolist()) == [4, 11]


def test_a_streamed_source_gives_the_report_quarantine_and_splits_of_one_kept_in_memory(tmp_path):
    """Above data.stream_above_mb, cleaning streams (flat memory; each pass until the split reads the source again):
    the embedded Adult data (stratified split, labeling, imputed values; a tighter hours range and
    whole-row de-duplication to quarantine some of it) either way, row for row."""
    outcomes = []
    for limit in (256, 0):
        out = tmp_path / f"out-{limit}"
        overrides = {"data.stream_above_mb": limit, "data.clean.hours_per_week.range.le": 60}
        cfg = load_config("tabular", overrides=overrides)
        cfg = load_config("tabular", overrides={**overrides, "data.dedup": cfg.data.split.key})
        prepared = prepare_data(get_task("tabular"), cfg, str(out), quiet)
        report = {k: v for k, v in prepared.report.items() if k != "quarantine_path"}
        splits = {name: ds.to_pandas().sort_values(["_source", "_record"], ignore_index=True) for name, ds in prepared.splits.items()}
        quarantine = pd.read_parquet(out / "quarantine").sort_values(["_source", "_record"], ignore_index=True)
        outcomes.append((report, splits, quarantine))
    (report, splits, quarantine), (streamed_report, streamed_splits, streamed_quarantine) = outcomes
    assert report == streamed_report
    assert report["quarantined_by_reason"]["range:hours_per_week"] > 0 and report["quarantined_by_reason"]["duplicate"] > 0
    for name in splits:
        pd.testing.assert_frame_equal(splits[name], streamed_splits[name])
    pd.testing.assert_frame_equal(quarantine, streamed_quarantine)


def test_the_same_table_in_every_format_and_a_glob(tmp_path):
    frame = pd.DataFrame({"id": range(20), "age": np.arange(20) + 20, "city": ["a", "b"] * 10,
                          "score": np.linspace(0, 1, 20), "label": ["yes", "no"] * 10})
    (tmp_path / "parts").mkdir()
    frame.iloc[:10].to_csv(tmp_path / "parts" / "p1.csv", index=False)
    frame.iloc[10:].to_csv(tmp_path / "parts" / "p2.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    for source in ("parts/*.csv", "t.tsv", "t.parquet", "t.jsonl", "parts"):
        cfg = tabular_config(tmp_path, tmp_path / source)
        prepared = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)
        assert prepared.report["rows_kept"] == 20, source


def test_text_files_are_read_line_by_line(tmp_path):
    from pipeline.data.ingest import read_dataset

    (tmp_path / "a.txt").write_text("first line\nsecond line\n")
    rows = read_dataset(str(tmp_path / "a.txt")).take_all()
    assert [r["text"] for r in rows] == ["first line", "second line"]


def test_schema_mismatch_fails_with_one_message(tmp_path):
    pd.DataFrame({"id": [1], "age": [3], "city": ["x"], "label": ["yes"]}).to_csv(tmp_path / "no_score.csv", index=False)
    with pytest.raises(DataError, match="missing column\\(s\\): score"):
        get_task("tabular").read(tabular_config(tmp_path, tmp_path / "no_score.csv"))
    pq.write_table(pa.table({"id": [1], "age": [True], "city": ["x"], "score": ["high"], "label": ["yes"]}), tmp_path / "typed.parquet")
    with pytest.raises(DataError, match="mistyped column\\(s\\): age \\(declared int, found bool\\)"):
        get_task("tabular").read(tabular_config(tmp_path, tmp_path / "typed.parquet"))
    pd.DataFrame({"id": [1, 2], "age": ["old", "young"], "city": ["x", "y"], "score": [1, 2], "label": ["a", "b"]}).to_csv(tmp_path / "words.csv", index=False)
    with pytest.raises(DataError, match="age \\(declared int, found text\\)"):
        get_task("tabular").read(tabular_config(tmp_path, tmp_path / "words.csv"))


def test_a_csv_in_ranges_is_read_and_cleaned_in_one_task_each_and_a_compressed_one_on_every_core(tmp_path):
    """Ranges, at least two per CPU: each read task cleans its rows itself (Ray Data fuses the steps, no copy
    between them). One compressed file, one read task: its output is split so that cleaning runs on every core."""
    import gzip

    from ray.data import DataContext

    from pipeline.data.clean import clean_dataset
    from pipeline.data.ingest import read_dataset

    data = "id,age,city,score,label\n" + "".join(f"{i},{20 + i % 50},Paris,0.5,yes\n" for i in range(20_000))
    (tmp_path / "big.csv").write_text(data)
    (tmp_path / "big.csv.gz").write_bytes(gzip.compress(data.encode()))
    cfg, task = tabular_config(tmp_path, tmp_path / "big.csv"), get_task("tabular")
    context = DataContext.get_current()
    saved, context.target_min_block_size = context.target_min_block_size, 1 << 10  # Ray Data would want 200 tasks
    try:
        ranged = clean_dataset(read_dataset(str(tmp_path / "big.csv"), "csv", cfg.data.options, cfg.data.columns,
                                            range_bytes=16 << 10), task.checks(cfg))
    finally:
        context.target_min_block_size = saved
    assert "ReadQuarantiningCSV->MapBatches(annotate_batch)" in ranged.annotated.stats()
    whole = clean_dataset(read_dataset(str(tmp_path / "big.csv.gz"), "csv", cfg.data.options, cfg.data.columns), task.checks(cfg))
    assert "ReadQuarantiningCSV->SplitBlocks" in whole.annotated.stats()
    assert ranged.rows_kept == whole.rows_kept == 20_000
    assert ranged.kept.to_pandas()["_record"].tolist() == list(range(20_000))  # ranges numbered as one file


def test_s3_ingest_from_a_local_server(tmp_path, s3_server):
    s3_server.create_bucket(Bucket="pipeline-test")
    s3_server.put_object(Bucket="pipeline-test", Key="raw/messy.csv", Body=MESSY_CSV.encode())
    cfg = tabular_config(tmp_path, "s3://pipeline-test/raw/messy.csv")
    prepared = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)
    assert (prepared.report["rows_in"], prepared.report["rows_kept"]) == (11, 3)
    # Streamed, everything on S3: the cleaning pass's workers write their rejected rows there, joined into one file.
    streamed = tabular_config(tmp_path, "s3://pipeline-test/raw/messy.csv", stream_above_mb=0)
    prepared = prepare_data(get_task("tabular"), streamed, "s3://pipeline-test/streamed", quiet)
    assert storage.list_files("s3://pipeline-test/streamed/quarantine") == ["quarantine.parquet"]  # no part left behind
    fs, path = storage.filesystem("s3://pipeline-test/streamed/quarantine/quarantine.parquet")
    assert pq.read_table(path, filesystem=fs).num_rows == prepared.report["rows_quarantined"] == 8
    with pytest.raises(DataError, match="bucket not found: no-such-bucket"):
        get_task("tabular").read(tabular_config(tmp_path, "s3://no-such-bucket/x.csv"))
    with pytest.raises(DataError, match="input not found: s3://pipeline-test/raw/missing.csv"):
        get_task("tabular").read(tabular_config(tmp_path, "s3://pipeline-test/raw/missing.csv"))


def test_empty_after_cleaning_stops_before_training(tmp_path):
    (tmp_path / "bad.csv").write_text("id,age,city,score,label\n1,-1,a,0.1,yes\n2,-2,b,0.2,no\n")
    cfg = tabular_config(tmp_path, tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no rows left after cleaning"):
        run_pipeline(cfg, str(tmp_path / "run"), Registry(str(tmp_path / "reg")), log=quiet)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("method", ["random", "stratified"])
def test_a_table_without_its_label_column_stops_before_the_split_and_names_the_setting(tmp_path, method):
    (tmp_path / "people.csv").write_text("age,city,income\n" + "".join(f"{20 + i},c{i % 3},{'hi' if i % 2 else 'lo'}\n" for i in range(30)))
    cfg = load_config("tabular", None, {"data.source": str(tmp_path / "people.csv"), "data.split.method": method})
    with pytest.raises(DataError, match=r"has no column 'label' \(its columns: age, city, income\).*data\.labeling\.target=COLUMN"):
        prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)


def adult_splits():
    cfg = load_config("tabular")
    prepared = prepare_data(get_task("tabular"), cfg, "/tmp/pipeline-test-adult", quiet)
    return cfg, prepared.splits


def test_features_take_no_statistic_from_val_or_test():
    cfg, splits = adult_splits()
    prep = get_task("tabular").fit_preprocessor(cfg, splits)
    train = splits["train"].to_pandas()
    rest = pd.concat([splits["val"].to_pandas(), splits["test"].to_pandas()])
    for col in ("age", "hours_per_week"):
        values = pd.to_numeric(train[col]).to_numpy()
        assert prep.stats["numeric"][col]["mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert prep.stats["numeric"][col]["std"] == pytest.approx(values.std(), rel=1e-6)
        assert prep.stats["numeric"][col]["mean"] != pytest.approx(pd.to_numeric(rest[col]).mean(), rel=1e-4)
    gain = pd.to_numeric(train["capital_gain"])
    assert prep.stats["numeric"]["capital_gain"]["fill"] == gain.median()  # imputation value from train only
    assert set(prep.stats["categorical"]["native_country"]["vocab"]) == set(train["native_country"].dropna())
    assert prep.stats["categorical"]["native_country"]["fill"] == train["native_country"].mode()[0]
    # A country that appears only outside train lands in the unknown bucket.
    only_outside = sorted(set(rest["native_country"].dropna()) - set(train["native_country"].dropna()))
    if only_outside:
        row = rest[rest["native_country"] == only_outside[0]].head(1)
        x = prep.transform(row, with_target=False)["x"]
        assert x[0, -1] == 1.0


def test_text_class_counts_come_from_train_and_count_each_text_once():
    import ray

    from pipeline.data.text import TextFeatures

    train = pd.DataFrame({"sentence": ["good good film", "good plot", "bad film", "not good , bad"],
                          "label": ["positive", "positive", "negative", "negative"]})
    cfg = load_config("text")
    features = cfg.features.model_dump() | {"min_bigram_count": 1}
    prep = TextFeatures(label_column="label", **(features | {"text_column": "sentence"})).fit(ray.data.from_pandas(train))
    counts = dict(zip(prep.labels.classes, prep.class_doc_counts))
    ids = {**prep.word_ids, **prep.bigram_ids}
    assert counts["positive"][ids["good"]] == 2 and counts["negative"][ids["good"]] == 1  # "good good": one text
    assert counts["negative"][ids["bad"]] == 2 and counts["positive"][ids["bad"]] == 0
    assert counts["negative"][ids["not good"]] == 1 and counts["positive"][ids["not good"]] == 0  # bigrams too
    assert counts["positive"][ids["good plot"]] == 1 and counts["negative"][ids["good plot"]] == 0
    assert counts["positive"][:2] == [0, 0] and len(counts["positive"]) == prep.hash_base
    assert TextFeatures.from_state(prep.state()).class_doc_counts == prep.class_doc_counts


@pytest.mark.parametrize("method", ["random", "stratified", "grouped", "temporal"])
def test_splits_are_deterministic_whatever_the_parallelism(method):
    import ray.data

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": np.arange(3000), "user": rng.integers(0, 300, 3000), "t": rng.permutation(3000),
                          "label": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1])})
    cfg = SplitConfig(method=method, ratios=[0.7, 0.15, 0.15], key=["id"], stratify="label", group="user", time="t")

    def assignment(blocks: int):
        ds = ray.data.from_pandas(frame.sample(frac=1, random_state=blocks)).repartition(blocks)
        splits = split_dataset(ds, cfg, 42)
        return {name: set(part.to_pandas()["id"]) for name, part in splits.items()}

    one, many = assignment(1), assignment(16)
    assert one == many
    assert sum(len(v) for v in one.values()) == 3000 and not (one["train"] & one["test"])
    by_id = frame.set_index("id")
    if method == "grouped":
        users = {name: set(by_id.loc[list(ids), "user"]) for name, ids in one.items()}
        assert not (users["train"] & users["val"]) and not (users["train"] & users["test"]) and not (users["val"] & users["test"])
    if method == "temporal":
        assert by_id.loc[list(one["train"]), "t"].max() < by_id.loc[list(one["val"]), "t"].min()
        assert by_id.loc[list(one["val"]), "t"].max() < by_id.loc[list(one["test"]), "t"].min()
    if method == "stratified":
        test_labels = by_id.loc[list(one["test"]), "label"].value_counts()
        for label, n in frame["label"].value_counts().items():
            assert abs(test_labels[label] - 0.15 * n) <= 1


def test_no_malformed_row_is_lost_across_many_read_blocks(tmp_path):
    """Regression: the CSV reader parses ahead while earlier rows are handed out; every malformed
    line must still come out (rows_in equals the file's line count)."""
    from pipeline.data.ingest import read_dataset

    rng = np.random.default_rng(1)
    lines = [f"{i},{rng.integers(18, 90)},c{i % 7},{rng.random():.3f},yes" for i in range(200_000)]
    for i in rng.choice(len(lines), 500, replace=False):
        lines[i] = lines[i].rsplit(",", 2)[0]
    (tmp_path / "big.csv").write_text("id,age,city,score,label\n" + "\n".join(lines) + "\n")
    cfg = tabular_config(tmp_path, tmp_path / "big.csv")
    frame = read_dataset(str(tmp_path / "big.csv"), "csv", cfg.data.options, cfg.data.columns).select_columns(["_malformed"]).to_pandas()
    assert len(frame) == 200_000 and frame["_malformed"].notna().sum() == 500


def test_an_execution_runs_tasks_side_by_side_from_its_start():
    """Ray Data 2.60 runs one task at a time until its autoscaling coordinator tells it the cluster's
    size, a second or more into an execution; `pipeline.runtime` sizes it from the cluster until then."""
    import time

    import ray.data

    def stamp(batch):
        start = time.time()
        time.sleep(0.5)
        return {"start": [start], "end": [time.time()]}

    rows = ray.data.range(4, override_num_blocks=4).map_batches(stamp, batch_size=None).take_all()
    first_end = min(row["end"] for row in rows)
    assert sum(row["start"] < first_end for row in rows) >= 2, rows


def test_before_the_coordinator_answers_an_execution_is_sized_from_the_cluster():
    """The first look at the coordinator returns nothing (it answers asynchronously, and in a session's
    first execution its actor is still starting): the limits are the cluster's, not zero."""
    from types import SimpleNamespace

    import ray
    from ray.data._internal.execution.interfaces import ExecutionOptions, ExecutionResources
    from ray.data._internal.execution.resource_manager import ResourceManager

    unanswered = SimpleNamespace(
        GLOBAL_LIMITS_UPDATE_INTERVAL_S=1, _global_limits=ExecutionResources.zero(), _global_limits_last_update_time=0,
        _options=ExecutionOptions(), _object_store_memory_limit_fraction=0.5, _get_total_resources=ExecutionResources.zero)
    limits = ResourceManager.get_global_limits(unanswered)
    assert limits.cpu == ray.cluster_resources()["CPU"]
    assert limits.object_store_memory > 0

    answered = SimpleNamespace(**{**vars(unanswered), "_global_limits_last_update_time": 0,
                                  "_get_total_resources": lambda: ExecutionResources(cpu=1, gpu=0, object_store_memory=2**20, memory=0)})
    assert ResourceManager.get_global_limits(answered).cpu == 1  # once it answers, its reservation applies


LOCAL_DATA_ONLY_RAY = """
import json, time
import ray, ray.data
from pipeline.runtime import init_ray

init_ray(num_cpus=2, dashboard=False)

def stamp(batch):
    start = time.time()
    time.sleep(0.5)
    return {"start": [start], "end": [time.time()]}

ds = ray.data.range(4, override_num_blocks=4).map_batches(stamp, batch_size=None).materialize()
assert sum(len(batch["start"]) for batch in ds.iter_batches(batch_size=None)) == 4  # iteration reports its metrics too
rows = ds.take_all()
first_end = min(row["end"] for row in rows)
raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
raylet_env = dict(kv.split(b"=", 1) for kv in open(f"/proc/{raylet}/environ", "rb").read().split(b"\\0") if b"=" in kv)
print(json.dumps({"rows": len(rows), "side_by_side": sum(row["start"] < first_end for row in rows),
                  "stats": "MapBatches(stamp)" in ds.stats(),
                  "actors": sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)),
                  "raylet_retry_ms": raylet_env.get(b"RAY_raylet_client_connect_timeout_milliseconds", b"").decode()}))
"""


def test_a_local_ray_without_dashboard_runs_ray_data_without_its_cluster_actors(tmp_path):
    """`pipeline data` and `batch-predict` start Ray locally without a dashboard: Ray Data's stats actor
    and autoscaling coordinator (a worker process each) have no reader and no autoscaler there, so none
    is started, and executions still run on every CPU, with their stats. The raylet it starts retries
    its connections every 100 ms. In a subprocess: it starts a Ray of its own, as those commands do."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", LOCAL_DATA_ONLY_RAY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["rows"] == 4 and seen["side_by_side"] >= 2 and seen["stats"], seen
    assert seen["actors"] == [], seen  # without the change: AutoscalingCoordinator and datasets_stats_actor
    assert seen["raylet_retry_ms"] == "100", seen  # the raylet retries its store every 100 ms, not 1 s


def test_small_materialised_datasets_read_in_the_driver_give_what_ray_data_gives():
    """Statistics, class counts and held-out batches read from a small materialised dataset's blocks in
    the driver (no Ray Data execution) equal the Ray Data pass they replace, empty blocks included."""
    import ray.data

    from pipeline.data.clean import value_counts
    from pipeline.data.features import block_partial, fit_partials
    from pipeline.data.local import StaleNoCpuWarning, each_block, local_batches, rebatched

    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"x": rng.normal(size=n), "label": rng.choice(["a", "b", "c"], size=n)}) for n in (700, 0, 1300, 5)]
    tables = [pa.Table.from_pandas(frame, preserve_index=False) for frame in frames]
    ds = ray.data.from_arrow(tables[:2] + [pa.table({})] + tables[2:]).materialize()  # an empty block without columns too
    assert ds.num_blocks() == 5
    lazy = ds.map_batches(lambda b: b, batch_format="pandas")

    def partial(batch):
        return {"n": len(batch), "sum": float(batch["x"].sum()), "labels": sorted(set(batch["label"]))}

    assert local_batches(lazy, "pandas") is None  # lazy data stays on Ray Data
    assert local_batches(ds, "pandas", limit=10) is None  # so does data over the limit
    from_ray = [p for p in fit_partials(lazy, partial, columns=["x", "label"]) if p["n"]]
    assert fit_partials(ds, partial, columns=["x", "label"]) == from_ray and len(from_ray) == 3
    assert value_counts(ds, "label") == value_counts(lazy, "label")
    StaleNoCpuWarning.until = 0.0
    in_tasks = each_block(ds, functools.partial(block_partial, partial, "pandas", ["x", "label"]), limit=0)  # a task a block
    assert [json.loads(p) for p in in_tasks if p is not None] == from_ray and each_block(lazy, len) is None
    assert StaleNoCpuWarning.until > time.monotonic()  # the next execution's look at free CPUs may be stale
    expected = list(ds.iter_batches(batch_size=256, batch_format="numpy"))
    got = list(rebatched(local_batches(ds, "numpy"), 256))
    assert [len(b["x"]) for b in got] == [len(b["x"]) for b in expected]
    for mine, theirs in zip(got, expected):
        assert np.array_equal(mine["x"], theirs["x"]) and np.array_equal(mine["label"].astype(str), theirs["label"].astype(str))
    frames_back = list(rebatched(local_batches(ds, "pandas"), 1000))
    assert [len(f) for f in frames_back] == [1000, 1000, 5] and frames_back[1].index[0] == 0


@pytest.mark.parametrize("method", ["random", "grouped"])
def test_a_lazy_source_is_split_in_one_pass(tmp_path, method):
    """Rows not held in memory (a streamed source) are split by cutting each block of one pass: the source
    is read once, not once a split, and the splits hold what the same rows held in memory give."""
    import uuid

    import ray.data

    calls = tmp_path / "calls"
    calls.mkdir()

    def source(batch: pd.DataFrame) -> pd.DataFrame:  # stands for reading and cleaning: one file a call
        (calls / uuid.uuid4().hex).touch()
        return batch.assign(user=batch["id"].to_numpy() % 50)

    lazy = ray.data.range(3000, override_num_blocks=6).map_batches(source, batch_format="pandas", batch_size=None)
    cfg = SplitConfig(method=method, ratios=[0.7, 0.15, 0.15], key=["id"], stratify=None,
                      group="user" if method == "grouped" else None, time=None)
    splits = split_dataset(lazy, cfg, seed=7)
    assert len(list(calls.iterdir())) <= 6 + 2  # a call a block, and the first block again for each look at the columns
    in_memory = split_dataset(lazy.materialize(), cfg, seed=7)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(splits[name].to_pandas(), in_memory[name].to_pandas(), check_dtype=False)
    assert sum(splits[name].count() for name in ("train", "val", "test")) == 3000


@pytest.mark.parametrize("method", ["stratified", "leave_last_out"])
def test_splits_cut_in_the_driver_have_ray_datas_blocks_and_rows(method, monkeypatch):
    """Small materialised data is split in the driver (`split_locally`): the same blocks (row counts, in
    order; training shards follow them) and the same rows as larger data cut by a task a block."""
    import ray.data

    import pipeline.data.split as split_module
    from pipeline.train.trainer import equal_split_ranges

    rng = np.random.default_rng(1)

    def frame(n):
        return pd.DataFrame({"id": np.arange(n) + 10_000 * n, "user": rng.integers(0, 40, n), "ts": rng.integers(0, 10**6, n),
                             "label": rng.choice(["a", "b"], n), "text": [f"row {i}" for i in range(n)]})

    tables = [pa.Table.from_pandas(frame(n), preserve_index=False) for n in (500, 3, 0, 1200, 1)]
    ds = ray.data.from_arrow(tables).materialize()
    cfg = SplitConfig(method=method, ratios=[0.7, 0.15, 0.15], key=["id"], stratify="label" if method == "stratified" else None,
                      group="user" if method == "leave_last_out" else None, time="ts" if method == "leave_last_out" else None)
    local = split_dataset(ds, cfg, seed=7)
    monkeypatch.setattr(split_module, "is_small", lambda *a, **k: False)  # cut by a task a block (`split_in_tasks`)
    remote = split_dataset(ds, cfg, seed=7)

    def block_rows(split):
        return [m.num_rows for bundle in split.iter_internal_ref_bundles() for m in bundle.metadata]

    def shards(split):  # the rows each of two training workers gets
        return [[r for r in ranks if r[1] > r[0]] for ranks in equal_split_ranges(block_rows(split), 2)]

    for name in ("train", "val", "test"):
        assert [n for n in block_rows(local[name]) if n] == [n for n in block_rows(remote[name]) if n], name
        assert shards(local[name]) == shards(remote[name]), name
        pd.testing.assert_frame_equal(local[name].to_pandas(), remote[name].to_pandas(), check_dtype=False)
    assert sum(local[name].count() for name in ("train", "val", "test")) == 1704


def test_a_baseline_gathers_only_the_splits_it_asks_for_and_a_seeded_sample_of_a_large_train():
    import ray.data

    from pipeline.flow import GatheredFeatures, feature_arrays

    ds = ray.data.from_numpy(np.arange(20_000, dtype=np.int64).reshape(-1, 1)).repartition(7).materialize()  # column "data"
    whole = feature_arrays(ds)
    assert whole["data"].ravel().tolist() == list(range(20_000))  # every row, in order
    sample = feature_arrays(ds, max_rows=5_000, seed=3)["data"].ravel()
    assert 4_500 < len(sample) < 5_500 and len(set(sample.tolist())) == len(sample) and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, feature_arrays(ds, max_rows=5_000, seed=3)["data"].ravel())  # the same seed, the same rows
    assert not np.array_equal(sample[:100], feature_arrays(ds, max_rows=5_000, seed=4)["data"].ravel()[:100])
    assert len(feature_arrays(ds, max_rows=50_000)["data"]) == 20_000  # under the cap: every row

    features = GatheredFeatures({"train": ds, "val": ds, "test": ds}, train_rows=1_000, seed=0)
    assert 800 < len(features["train"]["data"]) < 1_200 and len(features["val"]["data"]) == 20_000
    assert sorted(features) == ["train", "val"]  # test was never asked for, so never gathered
