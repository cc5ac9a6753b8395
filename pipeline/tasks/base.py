"""The task interface: what a workload supplies to the generic stages.

A workload is a module `<name>.py` with one `Task` subclass and its defaults in `<name>.yaml` beside it
(see `pipeline.tasks`). It implements the core below and extends one objective layer, which brings
training, evaluation and answers for a kind of problem:

- `ClassificationTask` (tasks/classification.py): cross-entropy, accuracy and macro-F1, label answers;
- `RankingTask` (tasks/ranking.py): ratings (MSE, RMSE) or ranking against sampled negatives (HR@10, NDCG@10).

Core, written by every workload: `config_class` (its typed `data.options`, `features` and `model`),
`request_model` (its HTTP request schema), `read`, `fit_preprocessor`, `build_model` and
`example_request`. With working defaults: `checks`, `forward`, `augment`, and baselines: `baseline_archs`
(the `model.arch` values that are fitted, not trained) with `fit_baseline`.
Objective layer: `loss`, `eval_sums` and `eval_metrics` (each epoch's validation, summable across
workers), `score_rows` and `split_metrics` (held-out evaluation), `summarize`, `answer_batch` (and `answer`, one
request) and `prediction_columns` (Serve and batch inference).

A task imports nothing from the flow, tuning, serving or CLI modules: they call it. A `predictor`
handed to it has `.model`, `.preprocessor`, `.run_id` and `.predict(raw_batch)` (numpy outputs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from pipeline.config import PipelineConfig
from pipeline.data.clean import Step
from pipeline.data.features import Preprocessor
from pipeline.models import unwrap


class RequestError(ValueError):
    """A request the model cannot answer; the message names the offending field (HTTP 422)."""


def fits_float32(values) -> bool:
    """Every value is finite once cast to float32, the dtype models read (NaN, infinity and |x| > 3.4e38 are not)."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.asarray(values, dtype=np.float64).astype(np.float32)).all())


class Task(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[PipelineConfig]]
    request_model: ClassVar[type[BaseModel]]
    route: ClassVar[str] = "predict"  # POST /<name>/<route>
    batch_format: ClassVar[str] = "pandas"  # batch format of the raw-data stages
    selection: ClassVar[tuple[str, str]]  # validation metric and mode that pick the served candidate
    baseline_archs: ClassVar[tuple[str, ...]] = ()  # `model.arch` values fitted in the driver by `fit_baseline`
    score_batch_rows: ClassVar[int] = 1024  # held-out rows a forward pass in evaluation (activations: rows x layers)

    # --- core ---------------------------------------------------------------------------------------
    @abstractmethod
    def read(self, cfg: PipelineConfig, columns: list[str] | None = None):
        """Raw rows (a Ray Dataset) from `cfg.data.source`. `columns`: for inference, only these
        declared columns must be present (no labels); None: every declared column."""

    @abstractmethod
    def fit_preprocessor(self, cfg: PipelineConfig, splits: dict) -> Preprocessor:
        """Features fitted on `splits["train"]` only."""

    @abstractmethod
    def build_model(self, cfg: PipelineConfig, preprocessor: Preprocessor) -> torch.nn.Module: ...

    @abstractmethod
    def example_request(self) -> tuple[dict, Any]:
        """A request for the demo and docs, with the answer a good model gives (or None)."""

    def required_columns(self, cfg: PipelineConfig) -> list[str]:
        """Columns the cleaned (and labelled) rows must have, checked before they are split: a run
        without them stops there with the columns it found, not in a task of the feature stage."""
        return []

    def checks(self, cfg: PipelineConfig) -> list[Step]:
        """Cleaning steps: the configured type coercion and column rules, the labeling functions, then
        the columns every candidate's split needs."""
        from pipeline.data.label import LabelingStep
        from pipeline.data.rules import PresentStep, rule_steps, split_columns

        steps = rule_steps(cfg.data)
        if cfg.data.labeling.functions:
            steps.append(LabelingStep(cfg.data.labeling))
        needed = list(dict.fromkeys(c for _, candidate in cfg.candidate_configs() for c in split_columns(candidate.data.split)))
        if needed:
            steps.append(PresentStep(needed))
        return steps

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model outputs for a batch of feature tensors: the model reads its `input_column`."""
        return model(batch[unwrap(model).input_column])

    def augment(self, cfg: PipelineConfig, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A training batch changed at random (torch's generator, which the loop seeds per rank and epoch)
        where the task's config asks for it (the image task's `model.augment`); by default the batch."""
        return batch

    def is_baseline(self, cfg: PipelineConfig) -> bool:
        return getattr(cfg.model, "arch", None) in self.baseline_archs

    def baseline_rows(self, cfg: PipelineConfig) -> int | None:
        """At most this many training rows (a seeded sample) for a baseline's fit; None: every row."""
        return None

    def fit_baseline(self, cfg: PipelineConfig, preprocessor: Preprocessor, features: dict[str, dict[str, np.ndarray]]) -> torch.nn.Module:
        """A baseline candidate's model (`cfg.model.arch` in `baseline_archs`), fitted on `features["train"]`
        (NumPy columns, as the preprocessor made them); any choice it makes uses `features["val"]` only.
        It is saved, evaluated, selected and served like a trained candidate."""
        raise NotImplementedError(f"task {self.name} has no baseline {getattr(cfg.model, 'arch', None)!r}")

    # --- objective layer ----------------------------------------------------------------------------
    @abstractmethod
    def loss(self, cfg: PipelineConfig, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    @abstractmethod
    def eval_sums(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, float | torch.Tensor]:
        """Sums over the batch that `eval_metrics` turns into metrics (summed across batches and workers).
        Scalar tensors are welcome: they stay on the device until the epoch's end (no host sync per batch)."""

    @abstractmethod
    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]: ...

    @abstractmethod
    def score_rows(self, predictor, batch) -> dict[str, np.ndarray]:
        """Per-row evaluation columns for a labelled batch (run by Ray Data on the held-out splits)."""

    @abstractmethod
    def split_metrics(self, rows: pd.DataFrame, preprocessor: Preprocessor) -> dict[str, Any]:
        """A split's metrics from the columns `score_rows` produced."""

    def summarize(self, results: dict[str, dict], served: str) -> dict[str, Any]:
        """metrics.json's `test` and `val` (and any `baselines` taken from the candidates): the served one's."""
        return {"test": results[served]["test"], "val": results[served]["val"]}

    def answer(self, request: dict, predictor) -> dict[str, Any]:
        """The answer to one validated request (raises RequestError for a 422)."""
        result = self.answer_batch([request], predictor)[0]
        if isinstance(result, RequestError):
            raise result
        return result

    @abstractmethod
    def answer_batch(self, requests: list[dict], predictor) -> list[dict[str, Any] | RequestError]:
        """Answers to several validated requests in order, each a dict or the RequestError that makes it a
        422 (one bad request never fails the others). Serve's dynamic batching calls this."""

    @abstractmethod
    def prediction_columns(self, outputs: np.ndarray, preprocessor: Preprocessor) -> dict[str, np.ndarray]:
        """Columns batch inference appends to each row."""


def source_schema(cfg: PipelineConfig, columns: list[str] | None) -> dict[str, str]:
    """The declared columns a source must hold: all of them, or those in `columns`."""
    if columns is None:
        return cfg.data.columns
    return {c: t for c, t in cfg.data.columns.items() if c in set(columns)}
