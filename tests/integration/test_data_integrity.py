"""Regressions for inputs that used to lose, merge or misfile rows without a sign (issue 11): each
test here failed on the code before the fix."""

import gzip
import json
import threading
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from pipeline.data.clean import clean_dataset
from pipeline.data.rules import TypeStep
from pipeline.errors import DataError
from pipeline.flow import prepare_data
from pipeline.tasks import get_task

from tests.integration.test_data_layer import quiet, tabular_config

pytestmark = pytest.mark.usefixtures("ray_session")

ADULT_NAMES = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
               "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income"]


def adult_lines(n: int) -> list[str]:
    path = resources.files("pipeline.datasets").joinpath("adult", "adult.data.gz")
    with gzip.open(str(path), "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(n)]


def adult_config(tmp_path, source):
    cfg = get_task("tabular")
    from pipeline.tasks import load_config

    adult = load_config("tabular")  # Adult's description (it applies to the embedded source only), for a copy of Adult's rows
    return adult.model_copy(update={"data": adult.data.model_copy(update={"source": str(source), "test_source": None})}), cfg


def test_a_stray_quote_costs_one_row_not_the_rest_of_the_file(tmp_path):
    lines = adult_lines(400)
    age, rest = lines[2].split(",", 1)
    lines[2] = f'{age},"{rest}'  # a quote opens the second field and never closes
    (tmp_path / "q.csv").write_text("\n".join(lines) + "\n")
    cfg, task = adult_config(tmp_path, tmp_path / "q.csv")
    report = prepare_data(task, cfg, str(tmp_path / "out"), quiet).report
    assert report["rows_in"] == 400 == report["rows_kept"] + report["rows_quarantined"]
    assert report["quarantined_by_reason"].get("malformed_row") == 1
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine")
    bad = quarantine[quarantine["reason"] == "malformed_row"]
    assert bad["_line"].tolist() == [3] and bad["_malformed"].str.contains("line 3: expected 15 fields, got 2").all()
    assert rest.split(",")[0].strip() in bad["_malformed"].iloc[0]  # the raw text is kept


def test_no_row_takes_another_rows_value(tmp_path):
    rows = ["id,age,city,score,label", '1,34,"Paris,0.5,yes', "2,41,Lyon,0.7,no", "3,29,Nice,0.1,yes",
            '4,52,Nice,0.2,"no', "5,38,Paris,0.9,yes", "6,25,Lyon,0.6,no"]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    cfg = tabular_config(tmp_path, tmp_path / "s.csv", dedup=[])
    prepared = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)
    assert prepared.report["rows_in"] == 6
    assert prepared.report["quarantined_by_reason"] == {"malformed_row": 1}  # row 1; row 4's '"no' is one field
    kept = prepared.clean.kept.to_pandas().sort_values("id")
    assert kept["id"].tolist() == [2, 3, 4, 5, 6]
    assert kept["city"].tolist() == ["Lyon", "Nice", "Nice", "Paris", "Lyon"]
    assert kept["label"].tolist() == ["no", "yes", "no", "yes", "no"]


def test_rows_with_a_missing_dedup_key_are_not_duplicates(tmp_path):
    rows = ["id,age,city,score,label", ",34,Paris,0.5,yes", ",41,Lyon,0.7,no", "?,29,Nice,0.1,yes", "1,52,Nice,0.2,no",
            "1,38,Paris,0.9,yes"]
    (tmp_path / "k.csv").write_text("\n".join(rows) + "\n")
    cfg = tabular_config(tmp_path, tmp_path / "k.csv")  # dedup: [id]
    report = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet).report
    assert report["quarantined_by_reason"] == {"duplicate": 1}
    assert report["rows_kept"] == 4


def test_int64_ids_stay_exact(tmp_path):
    big = 2**53
    rows = ["id,age,city,score,label"] + [f"{big + i},{30 + i},Paris,0.5,yes" for i in range(1, 4)] + [f"{2**63 - 1},40,Lyon,0.1,no"]
    (tmp_path / "ids.csv").write_text("\n".join(rows) + "\n")
    cfg = tabular_config(tmp_path, tmp_path / "ids.csv")  # dedup: [id]
    prepared = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)
    assert prepared.report["rows_quarantined"] == 0
    kept = prepared.clean.kept.to_pandas()
    assert sorted(int(x) for x in kept["id"]) == [big + 1, big + 2, big + 3, 2**63 - 1]


def test_one_datetime_format_per_column_whatever_the_blocks():
    import ray.data

    # The first value reads as ISO; "03/04/2021" is not ISO. Before the fix each block inferred its
    # own format from its first value, so which rows failed depended on where blocks began.
    values = ["2021-01-13", "2021-02-01", "03/04/2021", "2021-05-06", "13/04/2021", "2021-07-08", "07/08/2021", "2021-09-10"]
    frame = pd.DataFrame({"when": values, "n": range(len(values))})
    steps = [TypeStep({"when": "datetime"}, [])]
    outcomes = []
    for blocks in (1, 2, 4, 8):
        ds = ray.data.from_pandas([frame.iloc[i::blocks] for i in range(blocks)])
        result = clean_dataset(ds, steps)
        bad = sorted(result.quarantined.to_pandas()["n"].tolist())
        outcomes.append((bad, result.rows_kept))
    assert all(o == outcomes[0] for o in outcomes), outcomes
    assert outcomes[0] == ([2, 4, 6], 5)


def test_image_rows_can_be_deduplicated(tmp_path):
    from pipeline.tasks import load_config

    cfg = load_config("image", None, {"data.dedup": ["image"]})
    prepared = prepare_data(get_task("image"), cfg, str(tmp_path / "out"), quiet)
    report = prepared.report
    assert report["rows_in"] == 1797 == report["rows_kept"] + report["rows_quarantined"]
    # The digits have a handful of exact repeats; every repeat goes, one copy of each stays.
    images = prepared.clean.annotated.to_pandas()["image"]
    distinct = len({np.asarray(x).tobytes() for x in images})
    assert report["rows_kept"] == distinct and report["quarantined_by_reason"].get("duplicate", 0) == 1797 - distinct


def test_every_input_file_is_checked_against_the_schema(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,age,city,score,label\n1,34,Paris,0.5,yes\n")
    (tmp_path / "in" / "b.csv").write_text("id,age,town,score,label\n2,41,Lyon,0.7,no\n")
    cfg = tabular_config(tmp_path, tmp_path / "in")
    with pytest.raises(DataError, match=r"b\.csv.*missing column\(s\): city"):
        prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)


def test_rows_without_a_stratum_are_quarantined_not_sent_to_test(tmp_path):
    rows = ["id,age,city,score,label"] + [f"{i},{20 + i},Paris,0.5,{'yes' if i % 2 else 'no'}" for i in range(40)]
    rows += ["100,30,Lyon,0.5,", "101,31,Lyon,0.5,?"]
    (tmp_path / "st.csv").write_text("\n".join(rows) + "\n")
    split = {"method": "stratified", "ratios": [0.6, 0.2, 0.2], "key": ["id"], "stratify": "label"}
    cfg = tabular_config(tmp_path, tmp_path / "st.csv", split=split)
    prepared = prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), quiet)
    assert prepared.report["quarantined_by_reason"] == {"missing:label": 2}
    test_ids = prepared.splits["test"].to_pandas()["id"].tolist()
    assert 100 not in test_ids and 101 not in test_ids


def test_negative_sampling_is_bounded_on_a_small_catalog():
    from pipeline.data.interactions import InteractionFeatures
    from pipeline.tasks.ranking import ranking_metrics

    def transform(n_negatives):
        prep = InteractionFeatures("u", "i", "r", n_negatives=n_negatives, eval_negatives=True, seed=0)
        prep.s = {"users": [1, 2], "items": list(range(1, 51)), "history": {"1": list(range(1, 12)), "2": [4]}}
        prep._index()
        done = {}
        batch = {"u": np.array([1, 2]), "i": np.array([1, 4]), "r": np.array([4.0, 3.0])}
        worker = threading.Thread(target=lambda: done.update(out=prep.transform(batch, negatives=True)), daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "negative sampling did not finish"
        return done["out"]

    out = transform(100)  # a 50-item catalog cannot give 100 unrated negatives: both rows are skipped
    assert out["has_negatives"].tolist() == [False, False]
    scores = np.random.default_rng(0).random((2, 101))
    assert ranking_metrics(scores, out["has_negatives"]) == {"hr@10": 0.0, "ndcg@10": 0.0, "skipped_rows": 2, "rows": 2}
    out = transform(45)  # user 1 has 39 unrated items (skipped), user 2 has 49: drawn from those, all distinct
    assert out["has_negatives"].tolist() == [False, True]
    negatives = out["negatives"][1]
    assert len(set(negatives.tolist())) == 45 and 4 not in negatives and 0 not in negatives


def test_credentials_in_a_uri_are_not_printed_or_stored(tmp_path, s3_server):
    import boto3  # noqa: F401 - the s3_server fixture's client

    s3_server.create_bucket(Bucket="secret-data")
    s3_server.put_object(Bucket="secret-data", Key="m.csv",
                         Body=b"id,age,city,score,label\n1,34,Paris,0.5,yes\n2,41,Lyon,0.7,no\n3,29,Nice,0.1,yes\n")
    import os

    endpoint = os.environ["AWS_ENDPOINT_URL"].split("://")[1]
    source = f"s3://testing:testing-secret-value@secret-data/m.csv?endpoint_override={endpoint}&scheme=http"
    logged = []
    cfg = tabular_config(tmp_path, source)
    prepare_data(get_task("tabular"), cfg, str(tmp_path / "out"), logged.append)
    written = (tmp_path / "out" / "data_report.json").read_text()
    assert "testing-secret-value" not in written and "testing-secret-value" not in "\n".join(logged)
    assert json.loads(written)["source"].startswith("s3://***@secret-data/m.csv")
