"""The Task interface: what a workload supplies to the generic stages.

Data: `read` (default embedded data or a URI), `checks` (cleaning), `make_preprocessor`.
Model: `build_model`, `forward`, `loss`, `eval_sums`/`eval_metrics` (summable, so they all-reduce).
Evaluation: `evaluate` (test metrics and plots). Serving: `request_model` (pydantic),
`request_to_batch` (raises RequestError -> HTTP 422) and `format_predictions`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from pipeline.config import PipelineConfig
from pipeline.data.clean import Step
from pipeline.data.features import Preprocessor


class RequestError(ValueError):
    """A request the model cannot answer; the message names the offending field (HTTP 422)."""


class Task:
    name: ClassVar[str]
    batch_format: ClassVar[str] = "pandas"  # batch format of the raw-data stages
    input_columns: ClassVar[tuple[str, ...]] = ("x",)
    target_column: ClassVar[str] = "y"
    label_column: ClassVar[str] = "label"
    route: ClassVar[str] = "predict"
    request_model: ClassVar[Any] = None
    passthrough_columns: ClassVar[list[str] | None] = None  # batch inference keeps these (None: all inputs)
    selection: ClassVar[tuple[str, str]] = ("accuracy", "max")  # validation metric that picks the served candidate

    # --- data -------------------------------------------------------------------------------
    def validate_config(self, cfg: PipelineConfig) -> None:
        """Config errors a user can make, caught at load time with the offending key named."""
        from pipeline.data.label import validate_labeling
        from pipeline.data.rules import validate_rules

        target = {cfg.data.labeling.get("target", "label")} if cfg.data.labeling else set()
        validate_rules(cfg.data, target)
        validate_labeling(cfg.data.labeling, set(cfg.data.schema))

    def read(self, cfg: PipelineConfig, labelled: bool = True):
        """Raw rows from `cfg.data.source`; `labelled=False` for inference inputs without labels."""
        raise NotImplementedError

    def resolve_options(self, cfg: PipelineConfig, ds) -> None:
        """Fills data options left to be inferred from the data (called once, after ingest)."""

    def checks(self, cfg: PipelineConfig) -> list[Step]:
        """Cleaning steps: by default the configured type coercion, column rules and labeling."""
        from pipeline.data.label import LabelingStep
        from pipeline.data.rules import rule_steps

        steps = rule_steps(cfg.data)
        if cfg.data.labeling.get("functions"):
            steps.append(LabelingStep(cfg.data.labeling))
        return steps

    def make_preprocessor(self, cfg: PipelineConfig) -> Preprocessor:
        raise NotImplementedError

    def fit_preprocessor(self, cfg: PipelineConfig, splits: dict) -> Preprocessor:
        """The preprocessor fitted on the training split only."""
        return self.make_preprocessor(cfg).fit(splits["train"])

    def preprocessor_from_state(self, state: dict) -> Preprocessor:
        raise NotImplementedError

    # --- model ------------------------------------------------------------------------------
    def build_model(self, cfg: PipelineConfig, preprocessor_state: dict) -> torch.nn.Module:
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(*[batch[c] for c in self.input_columns])

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def batch_rows(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch[self.input_columns[0]])

    def eval_sums(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    # --- evaluation and serving -------------------------------------------------------------
    def evaluate(self, model_dir: str, splits: dict, output_dir: str) -> dict[str, dict]:
        raise NotImplementedError

    def summarize(self, results: dict[str, dict], served: str) -> tuple[dict, dict]:
        """metrics.json's top-level `test` and `val`: by default the served candidate's."""
        return results[served]["test"], results[served]["val"]

    def baselines(self, splits, results: dict[str, dict], output_dir: str, log) -> dict[str, dict]:
        """Non-neural reference models scored on the same split (metrics.json `baselines`)."""
        return {}

    def request_to_batch(self, request: dict, preprocessor: Preprocessor):
        raise NotImplementedError

    def example_request(self) -> tuple[dict, Any]:
        """A request for the demo and docs, with the answer expected from a good model (or None)."""
        raise NotImplementedError

    def feature_columns(self, cfg: PipelineConfig) -> list[str]:
        """Input columns an unlabelled source must hold (batch inference)."""
        return []

    def answer(self, request: dict, predictor) -> Any:
        """The HTTP/CLI answer to one validated request (raises RequestError for a 422)."""
        batch = self.request_to_batch(request, predictor.preprocessor)
        answer = self.format_predictions(predictor.predict(batch), predictor.preprocessor)[0]
        return {**answer, "task": self.name, "run_id": predictor.run_id}

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def prediction_columns(self, outputs: np.ndarray, preprocessor: Preprocessor) -> dict[str, np.ndarray]:
        """Columns batch inference appends to each row."""
        raise NotImplementedError

    def format_predictions(self, outputs: np.ndarray, preprocessor: Preprocessor) -> list[dict]:
        """One JSON-able answer per row, for Serve and `pipeline predict`."""
        raise NotImplementedError


class ClassificationTask(Task):
    """Shared by the image, text and tabular classifiers: cross-entropy, accuracy, macro-F1."""

    def loss(self, outputs, batch):
        return torch.nn.functional.cross_entropy(outputs.float(), batch[self.target_column])

    def eval_sums(self, outputs, batch):
        target = batch[self.target_column]
        outputs = outputs.float()
        return {
            "loss_sum": float(torch.nn.functional.cross_entropy(outputs, target, reduction="sum")),
            "correct": float((outputs.argmax(1) == target).sum()),
            "rows": float(len(target)),
        }

    def eval_metrics(self, sums):
        rows = max(sums["rows"], 1.0)
        return {"loss": sums["loss_sum"] / rows, "accuracy": sums["correct"] / rows}

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        return torch.softmax(outputs.float(), dim=1).cpu().numpy()

    def prediction_columns(self, outputs, preprocessor) -> dict[str, np.ndarray]:
        classes = np.asarray(preprocessor.labels.classes, dtype=object)
        best = outputs.argmax(axis=1)
        return {
            "prediction": classes[best].astype(str),
            "confidence": outputs[np.arange(len(best)), best].astype(np.float32),
            "probabilities": outputs.astype(np.float32),
        }

    def format_predictions(self, outputs, preprocessor):
        classes = preprocessor.labels.classes
        out = []
        for probs in outputs:
            best = int(np.argmax(probs))
            out.append({
                "label": classes[best],
                "probability": float(probs[best]),
                "probabilities": {c: float(p) for c, p in zip(classes, probs)},
            })
        return out

    def evaluate(self, model_dir, splits, output_dir):
        from pipeline.evaluate import evaluate_classifier

        return evaluate_classifier(self, model_dir, splits, output_dir)
