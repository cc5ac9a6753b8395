"""A toy fifth workload, added the way a user adds one: this module and `toy.yaml` beside it, found
through `PIPELINE_TASKS=tests.workloads.toy`. No file of the pipeline changes.

Two classes over a generated table: whether a point (x, y), uniform in [-2, 2]^2, lies inside the
circle that holds half the square's area.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from pipeline.config import PipelineConfig
from pipeline.models.mlp import MLP
from pipeline.tasks.classification import ClassificationTask
from pipeline.tasks.tabular import MLPSettings, TableFeatureSettings, table_features

RADIUS = math.sqrt(16 / (2 * math.pi))


class ToyConfig(PipelineConfig):
    features: TableFeatureSettings
    model: MLPSettings


class PointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float
    y: float


class ToyTask(ClassificationTask):
    name = "toy"
    config_class = ToyConfig
    request_model = PointRequest

    def read(self, cfg, columns=None):
        import ray.data

        points = np.random.default_rng(cfg.seed).uniform(-2, 2, (1000, 2))
        inside = np.hypot(points[:, 0], points[:, 1]) < RADIUS
        return ray.data.from_pandas(pd.DataFrame({"id": np.arange(len(points)), "x": points[:, 0], "y": points[:, 1],
                                                  "label": np.where(inside, "inside", "outside")}))

    def fit_preprocessor(self, cfg, splits):
        return table_features(cfg).fit(splits["train"])

    def build_model(self, cfg, preprocessor):
        return MLP(preprocessor.width(), len(preprocessor.labels.classes), cfg.model.hidden, cfg.model.dropout)

    def request_to_batch(self, request, preprocessor):
        return pd.DataFrame({"x": [request["x"]], "y": [request["y"]]})

    def example_request(self):
        return {"x": 0.1, "y": -0.2}, "inside"
