"""Loads a model directory (checkpoint layout) and predicts on raw batches.

Evaluation, Serve and batch inference all go through this class, so the preprocessing that
training used is applied unchanged everywhere (no train/serve skew).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.config import PipelineConfig
from pipeline.data.features import Preprocessor, load_preprocessor
from pipeline import storage
from pipeline.tasks import config_from_dict, get_task
from pipeline.train.checkpoint import CONFIG_FILE, PREPROCESSOR_FILE, load_weights


def load_model_config(model_uri: str) -> PipelineConfig:
    return config_from_dict(storage.read_json(storage.join(model_uri, CONFIG_FILE)))


def load_model_preprocessor(model_uri: str) -> Preprocessor:
    return load_preprocessor(storage.read_json(storage.join(model_uri, PREPROCESSOR_FILE)))


class Predictor:
    """A model folder at any storage URI, read straight into memory (no local copy to clean up).

    `device`: "cpu", "cuda" or "auto" (the GPU when one is visible). On a GPU that supports it the forward
    pass runs in bfloat16 autocast (`bf16=False` keeps float32); always under `torch.inference_mode`."""

    def __init__(self, model_uri: str, device: str = "cpu", bf16: bool = True):
        self.model_uri = model_uri
        metrics_uri = storage.join(model_uri, "metrics.json")
        self.run_id = storage.read_json(metrics_uri)["run_id"] if storage.exists(metrics_uri) else model_uri.rstrip("/").rsplit("/", 1)[-1]
        self.config = load_model_config(model_uri)
        self.task = get_task(self.config.task)
        self.preprocessor = load_model_preprocessor(model_uri)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.autocast = bf16 and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        model = self.task.build_model(self.config, self.preprocessor)
        self.model = load_weights(model_uri, model).to(self.device).eval()

    def predict(self, raw_batch: Any) -> np.ndarray:
        """Model outputs (logits, scores) as float32 for a batch of raw rows."""
        features = self.preprocessor.transform(raw_batch, with_target=False)
        tensors = {k: torch.as_tensor(np.asarray(v)).to(self.device, non_blocking=True) for k, v in features.items()}
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.task.forward(self.model, tensors).float().cpu().numpy()


class PredictBatch:
    """Ray Data callable class: appends prediction columns to each batch, keeping its scalar columns."""

    def __init__(self, model_uri: str, device: str = "cpu"):
        self.predictor = Predictor(model_uri, device)

    def __call__(self, batch):
        outputs = self.predictor.predict(batch)
        columns = self.predictor.task.prediction_columns(outputs, self.predictor.preprocessor)
        kept = {c: column_values(batch[c]) for c in batch if c not in columns}
        return {**{c: v for c, v in kept.items() if is_scalar_column(v)}, **columns}


def column_values(values: Any) -> np.ndarray:
    """A batch column as NumPy that Arrow can read. A pandas nullable column (Ray Data's text, a boolean
    or integer column with missing values) gives `pd.NA` objects, which Arrow refuses, and Ray Data then
    stores the whole column as pickled Python objects: a Parquet file only Ray can read. Missing values
    come out as None instead, so the column keeps its type with nulls."""
    if isinstance(getattr(values, "dtype", None), pd.api.extensions.ExtensionDtype) and values.hasnans:
        return values.to_numpy(dtype=object, na_value=None)
    return np.asarray(values)


def is_scalar_column(values: np.ndarray) -> bool:
    """One value per row (ids, labels, texts), not an array per row (an image)."""
    return values.ndim == 1 and not (values.dtype == object and len(values) and isinstance(values[0], np.ndarray))


class ScoreBatch:
    """Ray Data callable class: the task's per-row evaluation columns for a labelled batch."""

    def __init__(self, model_uri: str):
        self.predictor = Predictor(model_uri)

    def __call__(self, batch):
        return self.predictor.task.score_rows(self.predictor, batch)
