"""Tabular classification: an MLP over standardised numeric and one-hot categorical columns.

Default data: UCI Adult (embedded), income <=50K / >50K, evaluated on Adult's own test file.
Any CSV/TSV/Parquet/JSON-lines table works with a schema, cleaning rules and labeling in config.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.config import PipelineConfig
from pipeline.data.features import TableFeatures, to_numbers
from pipeline.errors import ConfigError
from pipeline.tasks.base import ClassificationTask, RequestError

HOLDOUT = "_holdout"


class TabularRequest(BaseModel):
    """One record: a JSON object with a value for every feature column of the served model."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors", "education_num": 13,
        "marital_status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
        "race": "White", "sex": "Male", "capital_gain": 2174, "capital_loss": 0, "hours_per_week": 40,
        "native_country": "United-States"}})


def builtin_path(name: str) -> str:
    return str(resources.files("pipeline.datasets").joinpath("adult", name))


def read_table(cfg: PipelineConfig, labelled: bool, builtin: tuple[str, str, dict] | None, feature_columns: list[str]):
    """The source (and, when configured, the test source marked `_holdout`) as one Ray Dataset."""
    import pandas as pd

    from pipeline.data.ingest import read_dataset

    data = cfg.data
    schema = data.schema if labelled else {c: t for c, t in data.schema.items() if c in feature_columns}
    using_builtin = data.source == "builtin"
    if using_builtin and builtin is None:
        raise ConfigError(f"task {cfg.task} has no embedded data; set data.source or pass --data")
    source = builtin[0] if using_builtin else data.source
    ds = read_dataset(source, data.format, data.options, schema)
    test_source = data.test_source
    if not labelled or test_source is None or (test_source == "builtin" and not using_builtin):
        return ds

    def mark(flag: bool):
        def add(batch: pd.DataFrame) -> pd.DataFrame:
            batch[HOLDOUT] = flag
            return batch
        return add

    test_options = {**data.options, **builtin[2]} if test_source == "builtin" else data.options
    test = read_dataset(builtin[1] if test_source == "builtin" else test_source, data.format, test_options, schema)
    return ds.map_batches(mark(False), batch_format="pandas").union(test.map_batches(mark(True), batch_format="pandas"))


class TabularTask(ClassificationTask):
    name = "tabular"
    request_model = TabularRequest

    def validate_config(self, cfg):
        super().validate_config(cfg)
        f = cfg.features
        columns = f.get("numeric", []) + f.get("categorical", [])
        if not columns:
            raise ConfigError("features.numeric / features.categorical: select at least one column")
        unknown = [c for c in columns + f.get("log1p", []) if cfg.data.schema and c not in cfg.data.schema]
        if unknown:
            raise ConfigError(f"features name column(s) not in data.schema: {', '.join(unknown)}")

    def feature_columns(self, cfg) -> list[str]:
        return cfg.features.get("numeric", []) + cfg.features.get("categorical", [])

    def read(self, cfg, labelled=True):
        return read_table(cfg, labelled, (builtin_path("adult.data.gz"), builtin_path("adult.test.gz"), {"skip_rows": 1}),
                          self.feature_columns(cfg))

    def make_preprocessor(self, cfg):
        from pipeline.data.rules import imputation

        f = cfg.features
        return TableFeatures(f.get("numeric", []), f.get("categorical", []), cfg.data.labeling.get("target", "label"),
                             f.get("log1p", []), f.get("encoding", "onehot"), f.get("min_frequency", 1), imputation(cfg.data))

    def preprocessor_from_state(self, state):
        return TableFeatures.from_state(state)

    def build_model(self, cfg, preprocessor_state):
        from pipeline.models.mlp import MLP

        prep = TableFeatures.from_state(preprocessor_state)
        return MLP(prep.width(), len(prep.stats["classes"]), tuple(cfg.model.get("hidden", [64])), float(cfg.model.get("dropout", 0.0)))

    def request_to_batch(self, request: dict[str, Any], preprocessor: TableFeatures):
        import pandas as pd

        expected = preprocessor.numeric + preprocessor.categorical
        missing = [c for c in expected if c not in request]
        unknown = sorted(set(request) - set(expected))
        problems = []
        if missing:
            problems.append(f"missing field(s): {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown field(s): {', '.join(unknown)}")
        for col in preprocessor.numeric:
            value = request.get(col)
            if col in request and value is not None and not np.isfinite(to_numbers([value])).all():
                problems.append(f"{col}: expected a finite number, got {value!r}")
        for col in expected:
            if col in request and request[col] is None and col not in preprocessor.imputation:
                problems.append(f"{col}: a value is required")
        if problems:
            raise RequestError("; ".join(problems))
        return pd.DataFrame({c: [request[c]] for c in expected})

    def example_request(self):
        return dict(TabularRequest.model_config["json_schema_extra"]["example"]), "<=50K"
