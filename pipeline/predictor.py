"""Loads a model directory (checkpoint layout) and predicts on raw batches.

Evaluation, Serve and batch inference all go through this class, so the preprocessing that
training used is applied unchanged everywhere (no train/serve skew).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from pipeline.config import PipelineConfig, from_dict
from pipeline.storage import local_copy
from pipeline.train.checkpoint import CONFIG_FILE, PREPROCESSOR_FILE, load_weights, read_json


class Predictor:
    def __init__(self, model_uri: str, device: str = "cpu"):
        from pipeline.tasks import get_task

        self.model_dir = local_copy(model_uri)
        metrics_path = os.path.join(self.model_dir, "metrics.json")
        self.run_id = read_json(metrics_path)["run_id"] if os.path.exists(metrics_path) else os.path.basename(model_uri.rstrip("/"))
        self.config: PipelineConfig = from_dict(PipelineConfig, read_json(os.path.join(self.model_dir, CONFIG_FILE)), "")
        self.task = get_task(self.config.task)
        self.preprocessor_state = read_json(os.path.join(self.model_dir, PREPROCESSOR_FILE))
        self.preprocessor = self.task.preprocessor_from_state(self.preprocessor_state)
        self.device = torch.device(device)
        model = self.task.build_model(self.config, self.preprocessor_state)
        self.model = load_weights(self.model_dir, model).to(self.device).eval()

    def predict(self, raw_batch: Any) -> np.ndarray:
        """Model outputs (class probabilities, scores) for a batch of raw rows."""
        features = self.preprocessor.transform(raw_batch, with_target=False)
        tensors = {c: torch.as_tensor(np.asarray(features[c])).to(self.device) for c in self.task.input_columns}
        with torch.no_grad():
            return self.task.postprocess(self.task.forward(self.model, tensors))


class PredictBatch:
    """Ray Data callable class: appends prediction columns to each batch, keeping `keep` columns."""

    def __init__(self, model_uri: str, keep: list[str] | None = None):
        self.predictor = Predictor(model_uri)
        self.keep = keep

    def __call__(self, batch):
        outputs = self.predictor.predict(batch)
        columns = self.predictor.task.prediction_columns(outputs, self.predictor.preprocessor)
        keep = self.keep if self.keep is not None else [c for c in batch if c not in columns]
        return {**{c: np.asarray(batch[c]) for c in keep if c in batch}, **columns}
