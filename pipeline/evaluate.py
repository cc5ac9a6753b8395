"""Held-out evaluation: per-row scores by Ray Data batch inference (the same model loading as
`pipeline batch-predict`), metrics and plots in the driver."""

from __future__ import annotations

import numpy as np

from pipeline import storage
from pipeline.predictor import ScoreBatch, load_model_preprocessor

SPLIT_COLUMN = "_eval_split"


def evaluate_model(task, model_dir: str, splits: dict, output_dir: str) -> dict[str, dict]:
    """The task's metrics on val and test (one pass over both), and the test confusion matrix as PNG.

    `model_dir` and `output_dir` are storage URIs: the scoring actors load the model from there, on any node."""
    from ray.data import ActorPoolStrategy

    def tagged(name: str):
        def tag(batch):
            batch[SPLIT_COLUMN] = np.full(len(batch[next(iter(batch))]), name)
            return batch
        return splits[name].map_batches(tag, batch_format=task.batch_format)

    both = tagged("val").union(tagged("test"))
    rows = both.map_batches(TaggedScore, fn_constructor_args=(model_dir,), compute=ActorPoolStrategy(size=1),
                            batch_size=1024, batch_format=task.batch_format).to_pandas()
    preprocessor = load_model_preprocessor(model_dir)
    results = {name: task.split_metrics(part.drop(columns=[SPLIT_COLUMN]).reset_index(drop=True), preprocessor)
               for name, part in rows.groupby(SPLIT_COLUMN, sort=False)}
    matrix = results["test"].get("confusion_matrix")
    if matrix is not None:
        from pipeline.plots import confusion_matrix_png

        confusion_matrix_png(np.asarray(matrix), list(results["test"]["per_class"]), storage.join(output_dir, "confusion_matrix.png"),
                             f"{task.name}: confusion matrix on test (accuracy {results['test']['accuracy']:.3f})")
    return {"val": results["val"], "test": results["test"]}


class TaggedScore(ScoreBatch):
    """Per-row scores that keep the split each row came from."""

    def __call__(self, batch):
        return {**super().__call__(batch), SPLIT_COLUMN: np.asarray(batch[SPLIT_COLUMN])}
