"""Tabular classification: an MLP over standardised numeric and one-hot categorical columns, and
scikit-learn's histogram gradient boosting on the same features as the baseline candidate.

Default data: UCI Adult (embedded), income <=50K / >50K, evaluated on Adult's own test file.
Any CSV/TSV/Parquet/JSON-lines table works with a schema, cleaning rules and labeling in config.
"""

from __future__ import annotations


from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from pipeline.config import PipelineConfig, Section, problem
from pipeline.data.features import TableFeatures
from pipeline.data.ingest import read_dataset
from pipeline.data.rules import imputation
from pipeline.data.split import HOLDOUT_COLUMN
from pipeline.errors import ConfigError
from pipeline.models.baselines import SklearnClassifier
from pipeline.models.mlp import MLP
from pipeline.tasks.base import RequestError, fits_float32, source_schema
from pipeline.tasks.classification import ClassificationTask


class TableFeatureSettings(Section):
    numeric: list[str]  # standardised (after log1p for the columns listed there)
    categorical: list[str]  # one-hot or ordinal, with an `unknown` bucket for values unseen in training
    # Both empty: every column but the label, numeric or categorical by its type in the training split.
    log1p: list[str]
    encoding: Literal["onehot", "ordinal"]
    min_frequency: PositiveInt  # rarer categories go to the unknown bucket


class PeriodicSettings(Section):
    """Periodic embeddings of the numeric features (pipeline/models/mlp.py); the default here (off) is what
    models saved before the option existed were trained with."""

    frequencies: NonNegativeInt = 0  # per numeric feature: cos and sin at this many trained frequencies; 0: off
    sigma: PositiveFloat = 1.0  # spread of the initial frequencies, in standard deviations of the feature
    dim: PositiveInt = 16  # width of each numeric feature's embedding


class MLPSettings(Section):
    arch: Literal["mlp", "hist_gradient_boosting"] = "mlp"  # hist_gradient_boosting: the baseline, fitted not trained
    hidden: list[PositiveInt]  # widths of the hidden layers (ReLU)
    dropout: NonNegativeFloat  # after each hidden layer
    periodic: PeriodicSettings = PeriodicSettings()
    baseline_rows: PositiveInt = 250_000  # hist_gradient_boosting fits on at most this many training rows (a seeded sample)


class TabularConfig(PipelineConfig):
    features: TableFeatureSettings
    model: MLPSettings

    @model_validator(mode="after")
    def features_are_declared(self):
        f = self.features
        for section in ("numeric", "categorical", "log1p"):
            unknown = [c for c in getattr(f, section) if self.data.columns and c not in self.data.columns]
            if unknown:
                raise problem(f"features.{section}", f"column(s) not in data.schema: {', '.join(unknown)}")
        return self


class TabularRequest(BaseModel):
    """One record: a JSON object with a value for every feature column of the served model."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors", "education_num": 13,
        "marital_status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
        "race": "White", "sex": "Male", "capital_gain": 2174, "capital_loss": 0, "hours_per_week": 40,
        "native_country": "United-States"}})


def builtin_path(name: str) -> str:
    return str(resources.files("pipeline.datasets").joinpath("adult", name))


def read_table(cfg: PipelineConfig, columns: list[str] | None, builtin: tuple[str, str, dict] | None):
    """The source (and, when configured, the test source marked `_holdout`) as one Ray Dataset.

    `builtin`: the embedded data's train file, test file and the test file's own reader options.
    """
    data = cfg.data
    schema = source_schema(cfg, columns)
    using_builtin = data.source == "builtin"
    if using_builtin and builtin is None:
        raise ConfigError(f"task {cfg.task} has no embedded data; set data.source or pass --data")
    ds = read_dataset(builtin[0] if using_builtin else data.source, data.format, data.options, schema)
    test_source = data.test_source
    if columns is not None or test_source is None or (test_source == "builtin" and not using_builtin):
        return ds

    def mark(flag: bool):
        def add(batch: pd.DataFrame) -> pd.DataFrame:
            batch[HOLDOUT_COLUMN] = flag
            return batch
        return add

    if test_source == "builtin":
        test = read_dataset(builtin[1], data.format, data.options.model_copy(update=builtin[2]), schema)
    else:
        test = read_dataset(test_source, data.format, data.options, schema)
    return ds.map_batches(mark(False), batch_format="pandas").union(test.map_batches(mark(True), batch_format="pandas"))


def table_features(cfg: PipelineConfig, train=None) -> TableFeatures:
    """The configured features; none configured: those `infer_features` finds in the `train` split."""
    f = cfg.features
    numeric, categorical = (f.numeric, f.categorical) if f.numeric + f.categorical else infer_features(cfg, train)
    return TableFeatures(numeric, categorical, cfg.data.labeling.target, f.log1p, f.encoding, f.min_frequency,
                         imputation(cfg.data))


def infer_features(cfg: PipelineConfig, train) -> tuple[list[str], list[str]]:
    """Every column of the training split but the label and the reader's own (`_source`...): numeric
    when each of its values reads as a number (CSV values arrive as text) and the schema does not declare
    it `category`, else categorical. One pass over the split."""
    from pipeline.data.features import fit_partials, to_numbers

    target, declared = cfg.data.labeling.target, cfg.data.columns

    def partial(batch: pd.DataFrame) -> dict:
        features = [c for c in batch.columns if c != target and not c.startswith("_")]
        return {c: not pd.api.types.is_bool_dtype(batch[c]) and bool((np.isfinite(to_numbers(batch[c])) | batch[c].isna().to_numpy()).all())
                for c in features}

    partials = [p for p in fit_partials(train, partial) if p]
    columns = list(partials[0]) if partials else []
    if not columns:
        raise ConfigError(f"no feature columns besides the label {target!r} in {cfg.data.source}")
    numeric = [c for c in columns if all(p.get(c, True) for p in partials) and declared.get(c) != "category"]
    return numeric, [c for c in columns if c not in numeric]


def is_float32(value: Any) -> bool:
    """A number (or numeric string) that float32 features hold: finite and |x| <= 3.4e38."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return fits_float32(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class TabularTask(ClassificationTask):
    name = "tabular"
    config_class = TabularConfig
    request_model = TabularRequest
    baseline_archs = ("hist_gradient_boosting",)
    # Small rows, a small MLP: at 1,024 the preprocessor's per-batch pandas work dominated scoring (300k rows
    # in the driver: 10.2 s at 1,024, 3.5 s at 8,192).
    score_batch_rows = 8192

    def read(self, cfg, columns=None):
        return read_table(cfg, columns, (builtin_path("adult.data.gz"), builtin_path("adult.test.gz"), {"skip_rows": 1}))

    def fit_preprocessor(self, cfg, splits):
        return table_features(cfg, splits["train"]).fit(splits["train"])

    def build_model(self, cfg, preprocessor):
        if cfg.model.arch == "hist_gradient_boosting":
            return SklearnClassifier(len(preprocessor.labels.classes))
        m, p = cfg.model, cfg.model.periodic
        return MLP(preprocessor.width(), len(preprocessor.labels.classes), m.hidden, m.dropout,
                   numeric=len(preprocessor.numeric), frequencies=p.frequencies, sigma=p.sigma, dim=p.dim)

    def baseline_rows(self, cfg):
        return cfg.model.baseline_rows

    def fit_baseline(self, cfg, preprocessor, features):
        """Histogram gradient boosting with scikit-learn's defaults (its early stopping holds out 10% of
        the training rows past 10,000 rows), on at most `model.baseline_rows` of them: its fit time
        grows with the rows, its accuracy did not past 50k-100k (benchmarks/NOTES.md)."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        estimator = HistGradientBoostingClassifier(random_state=cfg.seed).fit(features["train"]["x"], features["train"]["y"])
        return SklearnClassifier(len(preprocessor.labels.classes), estimator=estimator), {"iterations": int(estimator.n_iter_)}

    def request_to_batch(self, request: dict[str, Any], preprocessor: TableFeatures) -> pd.DataFrame:
        """One record -> a one-row frame; missing, unknown and non-numeric fields answer 422 together."""
        expected = preprocessor.numeric + preprocessor.categorical
        missing = [c for c in expected if c not in request]
        unknown = sorted(set(request) - set(expected))
        problems = []
        if missing:
            problems.append(f"missing field(s): {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown field(s): {', '.join(unknown)}")
        for col in preprocessor.numeric:
            if request.get(col) is not None and not is_float32(request[col]):
                problems.append(f"{col}: expected a finite number within float32 range, got {short_repr(request[col])}")
        for col in preprocessor.categorical:
            if request.get(col) is not None and not isinstance(request[col], (str, int, float)):
                problems.append(f"{col}: expected a string or a number, got {type(request[col]).__name__}")
        for col in expected:
            if col in request and request[col] is None and col not in preprocessor.imputation:
                problems.append(f"{col}: a value is required")
        if problems:
            raise RequestError("; ".join(problems))
        return pd.DataFrame({c: [request[c]] for c in expected})

    def example_request(self):
        return dict(TabularRequest.model_config["json_schema_extra"]["example"]), "<=50K"
