"""Batch inference with Ray Data: read any supported input, predict with a registry model, write Parquet."""

from __future__ import annotations

from pipeline.errors import PipelineError


def batch_predict(task_name: str, model_uri: str, input_uri: str, output_uri: str, fmt: str = "auto",
                  concurrency: tuple[int, int] = (1, 1), num_gpus: float = 0.0, batch_size: int = 1024) -> int:
    """Reads `input_uri` (Parquet, CSV, JSON lines, ... as the model was trained to read its data: the model's
    own config, with only its input columns required) and writes the rows with prediction columns as Parquet.

    An autoscaling pool of `concurrency` = (min, max) actors each loads the model once from `model_uri`
    (a registry run at any storage URI); `num_gpus` per actor puts the forward pass on a GPU."""
    import ray.data
    from ray.data import ActorPoolStrategy

    from pipeline.predictor import PredictBatch, load_model_config, load_model_preprocessor
    from pipeline.tasks import get_task

    task = get_task(task_name)
    cfg = load_model_config(model_uri)
    if cfg.task != task_name:
        raise PipelineError(f"the model in {model_uri} is a {cfg.task} model, not {task_name}")
    cfg.data.source, cfg.data.format = input_uri, fmt
    inputs = load_model_preprocessor(model_uri).input_columns
    ds = task.read(cfg, columns=inputs)
    low, high = concurrency
    if not 1 <= low <= high:
        raise PipelineError(f"--concurrency {low},{high}: give MIN,MAX with 1 <= MIN <= MAX")
    predictions = ds.map_batches(PredictBatch, fn_constructor_args=(model_uri, "cuda" if num_gpus > 0 else "cpu"),
                                 compute=ActorPoolStrategy(min_size=low, max_size=high), num_gpus=num_gpus or None,
                                 batch_size=batch_size, batch_format=task.batch_format)
    predictions.write_parquet(output_uri)
    rows = ray.data.read_parquet(output_uri).count()
    if rows == 0:
        raise PipelineError(f"no rows to predict in {input_uri}")
    return rows
