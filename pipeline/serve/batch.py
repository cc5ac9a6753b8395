"""Batch inference with Ray Data: read any supported input, predict with a registry model, write Parquet."""

from __future__ import annotations

from pipeline.errors import PipelineError


def batch_predict(task_name: str, model_uri: str, input_uri: str, output_uri: str, fmt: str = "auto",
                  actors: int = 1) -> int:
    import ray.data
    from ray.data import ActorPoolStrategy

    from pipeline.config import load_config
    from pipeline.predictor import PredictBatch
    from pipeline.tasks import get_task

    task = get_task(task_name)
    cfg = load_config(task_name, overrides={"data.source": input_uri, "data.format": fmt})
    ds = task.read(cfg, labelled=False)
    predictions = ds.map_batches(PredictBatch, fn_constructor_args=(model_uri, task.passthrough_columns),
                                 compute=ActorPoolStrategy(size=actors), batch_size=1024, batch_format=task.batch_format)
    predictions.write_parquet(output_uri)
    rows = ray.data.read_parquet(output_uri).count()
    if rows == 0:
        raise PipelineError(f"no rows to predict in {input_uri}")
    return rows
