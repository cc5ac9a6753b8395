"""The classification layer: cross-entropy training, accuracy / macro-F1 evaluation, label answers.

A classifier adds `request_to_batch` (a validated request -> raw rows for its preprocessor), and may
set `group_column` (test accuracy per value of that column, e.g. the review site) or change
`respond` (the answer's shape, by default the first row's prediction).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from pipeline.tasks.base import RequestError, Task


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    report = classification_report(y_true, y_pred, labels=classes, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "rows": int(len(y_true)),
        "per_class": {c: {k: float(v) for k, v in report[c].items()} for c in classes},
    }


def concat_batches(batches: list) -> Any:
    """Raw batches (data frames, or dicts of arrays) as one."""
    if isinstance(batches[0], pd.DataFrame):
        return pd.concat(batches, ignore_index=True) if len(batches) > 1 else batches[0]
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def batch_rows(batch: Any) -> int:
    return len(batch) if isinstance(batch, pd.DataFrame) else len(next(iter(batch.values())))


def request_fields(request: dict) -> list[str]:
    return [k for k, v in request.items() if v is not None] or list(request)


class ClassificationTask(Task):
    selection = ("accuracy", "max")
    group_column: ClassVar[str | None] = None

    @abstractmethod
    def request_to_batch(self, request: dict, preprocessor) -> Any:
        """Raw rows for the preprocessor from one validated request (raises RequestError for a 422)."""

    def required_columns(self, cfg):
        return [cfg.data.labeling.target]

    # --- training -----------------------------------------------------------------------------------
    def loss(self, cfg, outputs, batch):
        return torch.nn.functional.cross_entropy(outputs.float(), batch["y"], label_smoothing=cfg.train.label_smoothing)

    def eval_sums(self, outputs, batch):
        target = batch["y"]
        outputs = outputs.float()
        return {  # tensors on the device: the loop sums them there and reads them once per epoch
            "loss_sum": torch.nn.functional.cross_entropy(outputs, target, reduction="sum").detach(),
            "correct": (outputs.argmax(1) == target).sum(),
            "rows": float(len(target)),
        }

    def eval_metrics(self, sums):
        rows = max(sums["rows"], 1.0)
        return {"loss": sums["loss_sum"] / rows, "accuracy": sums["correct"] / rows}

    # --- evaluation ---------------------------------------------------------------------------------
    def score_rows(self, predictor, batch):
        prep = predictor.preprocessor
        predicted = np.asarray(prep.labels.classes, dtype=object)[predictor.predict(batch).argmax(axis=1)]
        out = {"label": np.asarray(batch[prep.label_column]).astype(str), "prediction": predicted.astype(str)}
        if self.group_column and self.group_column in batch:
            out[self.group_column] = np.asarray(batch[self.group_column]).astype(str)
        return out

    def split_metrics(self, rows: pd.DataFrame, preprocessor):
        """Accuracy, macro-F1, per-class report and confusion matrix (and accuracy per group)."""
        from sklearn.metrics import confusion_matrix

        classes = preprocessor.labels.classes
        metrics = classification_metrics(rows["label"], rows["prediction"], classes)
        if self.group_column in rows:
            correct = rows["label"] == rows["prediction"]
            metrics[f"per_{self.group_column}"] = {str(k): {"accuracy": float(v.mean()), "rows": int(len(v))}
                                                   for k, v in correct.groupby(rows[self.group_column])}
        metrics["confusion_matrix"] = confusion_matrix(rows["label"], rows["prediction"], labels=classes).tolist()
        return metrics

    # --- answers ------------------------------------------------------------------------------------
    def answer_batch(self, requests, predictor):
        """One forward pass for every valid request's rows; each answer is cut from it in order."""
        prep = predictor.preprocessor
        results: list[Any] = []
        accepted = []  # (position in `requests`, raw rows)
        for i, request in enumerate(requests):
            try:
                accepted.append((i, self.request_to_batch(request, prep)))
                results.append(None)
            except RequestError as exc:
                results.append(exc)
        if not accepted:
            return results
        outputs = predictor.predict(concat_batches([batch for _, batch in accepted]))
        start = 0
        for i, batch in accepted:
            rows = outputs[start:start + batch_rows(batch)]
            start += len(rows)
            if not np.isfinite(rows).all():  # finite inputs can still overflow the model's float32
                results[i] = RequestError(f"{', '.join(sorted(request_fields(requests[i])))}: values too large for the model "
                                          "to score (its outputs are not finite numbers)")
            else:
                results[i] = {**self.respond(batch, self.label_predictions(rows, prep), prep), "task": self.name,
                              "run_id": predictor.run_id}
        return results

    @staticmethod
    def label_predictions(logits: np.ndarray, prep) -> list[dict]:
        predictions = []
        for probs in softmax(logits):
            best = int(np.argmax(probs))
            predictions.append({"label": prep.labels.classes[best], "probability": float(probs[best]),
                                "probabilities": {c: float(p) for c, p in zip(prep.labels.classes, probs)}})
        return predictions

    def respond(self, batch, predictions: list[dict], preprocessor) -> dict[str, Any]:
        return predictions[0]

    def prediction_columns(self, outputs, preprocessor):
        probabilities = softmax(outputs)
        best = probabilities.argmax(axis=1)
        return {
            "prediction": np.asarray(preprocessor.labels.classes, dtype=object)[best].astype(str),
            "confidence": probabilities[np.arange(len(best)), best].astype(np.float32),
            "probabilities": probabilities.astype(np.float32),
        }
