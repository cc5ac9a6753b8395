import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.config import ColumnRules, LabelingConfig
from pipeline.data.clean import first_reason
from pipeline.data.features import TableFeatures
from pipeline.data.label import LabelingStep, labeling_partial, labeling_stats
from pipeline.data.rules import RuleStep, TypeStep, rule_steps
from pipeline.data.schema import check_columns, coerce
from pipeline.errors import ConfigError, DataError
from pipeline.tasks import load_config


def data_config(**data):
    """The tabular task's data section with `data` replacing whole parts of it (as a user file does)."""
    base = load_config("tabular").data.model_dump(by_alias=True)
    return type(load_config("tabular").data).model_validate({**base, "labeling": {}, **data})


def test_coercion_flags_values_that_are_present_but_wrong():
    values, bad = coerce(pd.Series(["39", " 40 ", "?", "", "abc", "nan", "4.5"]), "int", {"?"})
    assert bad.tolist() == [False, False, False, False, True, True, True]
    assert values.iloc[1] == 40 and pd.isna(values.iloc[2]) and pd.isna(values.iloc[3])
    text, bad = coerce(pd.Series([" Private", "?", None]), "category", {"?"})
    assert text.tolist()[0] == "Private" and pd.isna(text.iloc[1]) and not bad.any()
    flags, bad = coerce(pd.Series(["yes", "0", "maybe"]), "bool", set())
    assert bad.tolist() == [False, False, True]


def test_schema_mismatch_lists_every_problem_in_one_message():
    with pytest.raises(DataError) as err:
        check_columns("data.parquet", {"age": "string", "income": "bool", "extra": "int"},
                      {"age": "int", "income": "float", "sex": "category", "hours": "float"})
    message = str(err.value)
    assert "missing column(s): sex, hours" in message and "income (declared float, found bool)" in message
    assert "age (declared" not in message  # text is coerced per value, not a schema error


def adult_like_batch():
    return pd.DataFrame({"age": ["39", "-3", "abc", "150", None], "workclass": ["Private", "?", "Private", "X", "Y"],
                         "email": ["a@b.c", "a@b.c", "bad", "a@b.c", "a@b.c"]})


def test_rule_steps_name_the_rule_and_column():
    data = data_config(schema={"age": "int", "workclass": "category", "email": "string"},
                       clean={"age": {"required": True, "range": {"gt": 0, "le": 120}},  # the reference design's age > 0
                              "workclass": {"allowed": ["Private", "X", "Y"]}, "email": {"regex": "[^@]+@[^@]+"}},
                       options={"na_values": ["?"]}, dedup=[])
    batch = adult_like_batch()
    reasons = []
    for step in rule_steps(data):
        batch, r = step(batch)
        reasons.append(r)
    assert first_reason(reasons, 5).tolist() == ["", "range:age", "type:age", "range:age", "missing:age"]
    batch = adult_like_batch()
    batch, _ = TypeStep(data.columns, ["?"])(batch)
    _, regex = RuleStep("email", ColumnRules(regex="[^@]+@[^@]+"))(batch)
    assert regex.tolist() == ["", "", "regex:email", "", ""]
    assert pd.isna(batch["workclass"].iloc[1])  # "?" is missing, so `allowed` does not reject it


def test_imputed_columns_are_not_rejected_when_missing():
    batch = pd.DataFrame({"x": [None, "1"]})
    _, reasons = RuleStep("x", ColumnRules(required=True, impute="median"))(batch)
    assert reasons.tolist() == ["", ""]


@pytest.mark.parametrize("override,message", [
    ({"data.clean.agee": {"required": True}}, "data.clean.agee: column 'agee' is not in data.schema"),
    ({"data.clean.age": {"between": [1, 2]}}, "data.clean.age.between: unknown key"),
    ({"data.clean.workclass": {"impute": "median"}}, "data.clean.workclass.impute: impute: median needs a numeric column"),
    ({"data.clean.age": {"regex": "("}}, "data.clean.age.regex: not a valid pattern"),
    ({"data.dedup": ["nope"]}, "data.dedup: column 'nope' is not in data.schema"),
    ({"data.labeling.functions": [{"type": "keyword", "column": "photo", "keywords": ["a"], "label": "x"}]},
     "data.labeling.functions\\[0\\].column: column 'photo' is not in data.schema"),
    ({"data.labeling.functions": [{"type": "vote", "column": "age"}]}, "data.labeling.functions\\[0\\]"),
    ({"features.numeric": ["salary"]}, "features.numeric: column\\(s\\) not in data.schema: salary"),
])
def test_config_errors_name_the_column_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tabular", overrides=override)


def test_reference_labeling_example_animal_else_landscape():
    step = LabelingStep(LabelingConfig.model_validate({
        "target": "label", "default": "landscape",
        "functions": [{"name": "animal", "type": "keyword", "column": "photo", "keywords": ["animal"], "label": "animal"}]}))
    batch, reasons = step(pd.DataFrame({"photo": ["an Animal in snow", "mountains", None]}))
    assert batch["label"].tolist() == ["animal", "landscape", "landscape"] and not any(reasons)


def test_majority_vote_with_abstain_and_conflicts():
    fns = [
        {"name": "kw", "type": "keyword", "column": "text", "keywords": ["great"], "label": "pos"},
        {"name": "rx", "type": "regex", "column": "text", "pattern": "bad|awful", "label": "neg"},
        {"name": "stars", "type": "threshold", "column": "stars", "op": "ge", "value": 4, "label": "pos"},
        {"name": "map", "type": "map", "column": "code", "mapping": {"N": "neg"}},
    ]
    batch = pd.DataFrame({"text": ["great", "great but bad", "awful", "meh", "great and bad"],
                          "stars": [5, 1, 2, None, 5], "code": [None, None, "N", None, "N"]})
    out, reasons = LabelingStep(LabelingConfig.model_validate({"target": "y", "functions": fns}))(batch)
    assert out["y"].fillna("-").tolist() == ["pos", "-", "neg", "-", "-"]
    assert reasons.tolist() == ["", "label_conflict", "", "unlabeled", "label_conflict"]
    stats = labeling_stats([labeling_partial(out, ["kw", "rx", "stars", "map"])], ["kw", "rx", "stars", "map"])
    assert stats["kw"] == {"coverage": 0.6, "conflicts": 0.4}
    assert stats["stars"]["coverage"] == 0.4 and stats["map"]["coverage"] == 0.4


def table_features():
    return TableFeatures(["age", "gain"], ["job"], "label", log1p=["gain"], encoding="onehot", min_frequency=1, imputation={
        "age": {"strategy": "median", "fill_value": None}, "job": {"strategy": "constant", "fill_value": "missing"}},
        state={"numeric": {"age": {"mean": 40.0, "std": 10.0, "fill": 35.0}, "gain": {"mean": 1.0, "std": 2.0, "fill": 0.0}},
               "categorical": {"job": {"vocab": ["a", "b", "missing"], "fill": "missing"}}, "classes": ["no", "yes"]})


def test_table_features_impute_scale_and_bucket_unknowns():
    prep = table_features()
    out = prep.transform(pd.DataFrame({"age": [50, None], "gain": [0, np.e - 1], "job": ["b", "zzz"], "label": ["yes", "no"]}))
    assert out["x"].shape == (2, 2 + 4)
    assert out["x"][0, 0] == pytest.approx(1.0) and out["x"][1, 0] == pytest.approx(-0.5)  # median-imputed 35
    assert out["x"][1, 1] == pytest.approx(0.0)  # log1p(e - 1) = 1 -> (1 - 1) / 2
    assert out["x"][0, 2:].tolist() == [0, 1, 0, 0] and out["x"][1, 2:].tolist() == [0, 0, 0, 1]  # unknown bucket
    assert out["y"].tolist() == [1, 0]
    assert TableFeatures.from_state(prep.state()).state() == prep.state()


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.from_regex(r"\A[ +\-]?[0-9]{0,4}[.,]?[0-9]{0,4}([eE][+\-]?[0-9]{1,3})?[ ]?\Z"),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-Infinity", "?", "1_000", "0x10", "True", "\u0663"]),
    st.text(max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.none(), NUMBER_TEXT), max_size=20), dtype=st.sampled_from(["string", "str", "large_string[pyarrow]"]))
@example(values=["+10E24"], dtype="string")  # found by CI: pandas reads 9.999999999999999e24
def test_numbers_read_from_text_are_pandas_numbers(values, dtype):
    """Arrow's parser (the fast path) and pandas' find the same finite values; whatever either calls
    missing or infinite, the features impute alike. Where they differ, it is pandas' rounding: its parser
    can be one unit in the last place off ("+10E24" -> 9.999999999999999e24), and Arrow's value is then
    the nearest double, Python's `float`. Text as pandas holds it and as Ray Data hands it."""
    from pipeline.data.features import to_numbers

    text = pd.Series(values, dtype=dtype)
    ours = to_numbers(text)
    theirs = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    assert ours.dtype == np.float64 and len(ours) == len(values)
    assert (np.isfinite(ours) == np.isfinite(theirs)).all()
    for value, mine, pandas_value in zip(values, ours, theirs):
        if np.isfinite(mine) and mine != pandas_value:
            assert mine == float(value) and abs(mine - pandas_value) <= np.spacing(abs(mine)), (value, mine, pandas_value)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", " a", "A", "", "ü"]), st.text(max_size=3)), max_size=20),
       vocabulary=st.lists(st.text(max_size=3), unique=True, max_size=5))
def test_category_codes_are_each_values_place_in_the_vocabulary(values, vocabulary):
    from pipeline.data.features import category_codes, to_text

    text = to_text(pd.Series(values, dtype=object))
    expected = [vocabulary.index(v) if isinstance(v, str) and v in vocabulary else -1 for v in text.to_numpy(dtype=object, na_value=None)]
    assert category_codes(text, vocabulary).tolist() == expected


def test_tabular_request_errors_name_fields():
    from pipeline.tasks.base import RequestError
    from pipeline.tasks.tabular import TabularTask

    prep = table_features()
    task = TabularTask()
    with pytest.raises(RequestError, match="missing field\\(s\\): gain; unknown field\\(s\\): salary"):
        task.request_to_batch({"age": 3, "job": "a", "salary": 1}, prep)
    with pytest.raises(RequestError, match="age: expected a finite number within float32 range, got 'old'"):
        task.request_to_batch({"age": "old", "gain": 1, "job": "a"}, prep)
    with pytest.raises(RequestError, match="gain: a value is required"):
        task.request_to_batch({"age": None, "gain": None, "job": "a"}, prep)  # age may be imputed, gain not
    assert task.request_to_batch({"age": 30, "gain": 1, "job": "a"}, prep).shape == (1, 3)


def test_rules_without_a_schema_accept_any_column():
    data = data_config(schema={}, clean={"anything": {"required": True}})
    first, *rules = rule_steps(data)
    assert isinstance(first, TypeStep) and not first.schema  # without a schema it only quarantines unparsable lines
    assert [step.column for step in rules] == ["anything"]


def test_merged_median_matches_numpy():
    from pipeline.data.features import merged_median

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 10, 101):
        values = rng.integers(0, 5, n).astype(float)
        halves = [values[: n // 2], values[n // 2:]]
        partials = [dict(zip(("values", "counts"), [u.tolist() for u in np.unique(h, return_counts=True)])) for h in halves]
        assert merged_median(partials) == np.median(values)


def test_variance_merge_is_stable_for_a_large_mean_and_a_small_spread():
    from pipeline.data.features import merge_moments, moments

    values = 1e9 + np.random.default_rng(0).uniform(0, 1, 10_000)  # e.g. timestamps or ids: spread 1 around 1e9
    mean, std = merge_moments([moments(part) for part in np.array_split(values, 7)] + [moments(np.array([]))])
    assert mean == pytest.approx(values.mean(), rel=1e-15)
    assert std**2 == pytest.approx(np.var(values), rel=1e-6)  # E[x^2] - mean^2 keeps no correct digit here
    assert merge_moments([moments(np.full(5, 3.0))]) == (3.0, 1.0)  # no spread: unit scale, not a division by 0


def test_cleaning_streams_a_source_larger_than_stream_above_mb(tmp_path):
    from pipeline.data.clean import streaming_reason

    for i in range(3):
        (tmp_path / f"part-{i}.csv").write_bytes(b"x" * 400_000)
    (tmp_path / ".hidden.csv").write_bytes(b"x" * 10**7)  # skipped by the reader, so not counted
    glob = str(tmp_path / "part-*.csv")

    def data(source, limit, test_source=None):
        return load_config("tabular", overrides={"data.source": source, "data.test_source": test_source,
                                                 "data.stream_above_mb": limit}).data

    assert streaming_reason(data(str(tmp_path), 1)) == "source 1 MiB > data.stream_above_mb 1"  # 1.2 MB in three files
    assert streaming_reason(data(glob, 2)) == ""
    assert streaming_reason(data(str(tmp_path / "part-0.csv"), 0.5, test_source=glob)) == "source 2 MiB > data.stream_above_mb 0.5"
    assert streaming_reason(data("builtin", 0.001)) == ""  # the embedded sets are small
    assert streaming_reason(data("builtin", 0)) == "data.stream_above_mb is 0"
