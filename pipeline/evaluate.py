"""Held-out evaluation: per-row scores (the same model loading as `pipeline batch-predict`), metrics and
plots in the driver. Small held-out splits are scored in the driver itself; starting an actor pool (a
process that imports torch and loads the model) costs more than scoring them. So are larger ones where
the pool could hold only one actor (a cluster of 2-3 CPUs): one actor does the driver's work after its
start. Otherwise they go through Ray Data batch inference on the cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import storage
from pipeline.data.local import local_batches, rebatched
from pipeline.predictor import ScoreBatch, load_model_preprocessor

SPLIT_COLUMN = "_eval_split"
IN_PROCESS_ROWS = 200_000  # val + test rows up to which the driver scores them itself
MAX_SCORING_ACTORS = 4


def evaluate_model(task, model_dir: str, splits: dict, output_dir: str, in_process_rows: int = IN_PROCESS_ROWS) -> dict[str, dict]:
    """The task's metrics on val and test (one pass over both), and the test confusion matrix as PNG.

    `model_dir` and `output_dir` are storage URIs: the scoring actors load the model from there, on any node."""
    from ray.data import ActorPoolStrategy

    def tag(batch, name: str):
        batch[SPLIT_COLUMN] = np.full(len(batch[next(iter(batch))]), name)
        return batch

    def both():  # val then test, tagged, as one Ray Dataset
        return splits["val"].map_batches(tag, fn_args=("val",), batch_format=task.batch_format).union(
            splits["test"].map_batches(tag, fn_args=("test",), batch_format=task.batch_format))

    actors = scoring_actors()
    if actors == 1 or splits["val"].count() + splits["test"].count() <= in_process_rows:
        score = TaggedScore(model_dir)
        local = [local_batches(splits[name], task.batch_format) for name in ("val", "test")]
        if all(part is not None for part in local):  # the blocks as they are: no Ray Data execution
            batches = rebatched([tag(batch, name) for name, part in zip(("val", "test"), local) for batch in part], task.score_batch_rows)
        else:
            batches = both().iter_batches(batch_size=task.score_batch_rows, batch_format=task.batch_format)
        rows = pd.concat([pd.DataFrame(score(batch)) for batch in batches], ignore_index=True)
    else:
        rows = both().map_batches(TaggedScore, fn_constructor_args=(model_dir,), compute=ActorPoolStrategy(min_size=1, max_size=actors),
                                batch_size=task.score_batch_rows, batch_format=task.batch_format).to_pandas()
    preprocessor = load_model_preprocessor(model_dir)
    results = {name: task.split_metrics(part.drop(columns=[SPLIT_COLUMN]).reset_index(drop=True), preprocessor)
               for name, part in rows.groupby(SPLIT_COLUMN, sort=False)}
    matrix = results["test"].get("confusion_matrix")
    if matrix is not None:
        from pipeline.plots import confusion_matrix_png

        confusion_matrix_png(np.asarray(matrix), list(results["test"]["per_class"]), storage.join(output_dir, "confusion_matrix.png"),
                             f"{task.name}: confusion matrix on test (accuracy {results['test']['accuracy']:.3f})")
    return {"val": results["val"], "test": results["test"]}


def scoring_actors() -> int:
    """Actors the scoring pool may grow to: half the cluster's CPUs, at most `MAX_SCORING_ACTORS`. Each
    one imports torch and loads the model (about 3 s on 2 cores) before its first batch."""
    import ray

    return max(1, min(MAX_SCORING_ACTORS, int(ray.cluster_resources().get("CPU", 0)) // 2))


class TaggedScore(ScoreBatch):
    """Per-row scores that keep the split each row came from."""

    def __call__(self, batch):
        return {**super().__call__(batch), SPLIT_COLUMN: np.asarray(batch[SPLIT_COLUMN])}
