"""Held-out evaluation: predictions by Ray Data batch inference, metrics and plots in the driver."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipeline.predictor import PredictBatch


def predict_split(task, model_dir: str, ds, keep: list[str]):
    """Runs the model over a split with the same code path as `pipeline batch-predict`."""
    from ray.data import ActorPoolStrategy

    out = ds.map_batches(PredictBatch, fn_constructor_args=(model_dir, keep), compute=ActorPoolStrategy(size=1),
                         batch_size=1024, batch_format=task.batch_format)
    return out.drop_columns(["probabilities"]).to_pandas()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    report = classification_report(y_true, y_pred, labels=classes, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "rows": int(len(y_true)),
        "per_class": {c: {k: float(v) for k, v in report[c].items()} for c in classes},
    }


def evaluate_classifier(task, model_dir: str, splits: dict, output_dir: str, by: str | None = None) -> dict[str, dict]:
    """Accuracy, macro-F1 and per-class report on val and test, the test confusion matrix as PNG,
    and with `by` (a column such as the review site) the test accuracy per value of that column."""
    from sklearn.metrics import confusion_matrix

    from pipeline.plots import confusion_matrix_png
    from pipeline.train.checkpoint import PREPROCESSOR_FILE, read_json

    classes = task.preprocessor_from_state(read_json(os.path.join(model_dir, PREPROCESSOR_FILE))).labels.classes
    results = {}
    for name in ("val", "test"):
        keep = [task.label_column] + ([by] if by and by in splits[name].columns() else [])
        frame = predict_split(task, model_dir, splits[name], keep)
        results[name] = classification_metrics(frame[task.label_column], frame["prediction"], classes)
        if len(keep) > 1:
            correct = frame[task.label_column].astype(str) == frame["prediction"].astype(str)
            results[name][f"per_{by}"] = {str(k): {"accuracy": float(v.mean()), "rows": int(len(v))}
                                          for k, v in correct.groupby(frame[by].astype(str))}
        if name == "test":
            matrix = confusion_matrix(frame[task.label_column].astype(str), frame["prediction"].astype(str), labels=classes)
            confusion_matrix_png(matrix, classes, os.path.join(output_dir, "confusion_matrix.png"),
                                 f"{task.name}: confusion matrix on test (accuracy {results[name]['accuracy']:.3f})")
            results[name]["confusion_matrix"] = matrix.tolist()
    return results
