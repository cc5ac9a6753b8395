"""Driver side of training: one Ray Train `TorchTrainer` run over the prepared datasets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.train.checkpoint import HISTORY_FILE, checkpoint_json
from pipeline.train.loop import train_loop_per_worker


@dataclass
class TrainOutcome:
    best_checkpoint: Any  # the ray.train.Checkpoint with the best validation metric (on the run's storage)
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]  # one entry per epoch, across restarts
    resumed_from: list[int]  # epochs after which training resumed from a checkpoint
    worker_nodes: list[list[str]]  # per (re)start of the worker group: the Ray node id of each rank


def loop_config(cfg: PipelineConfig, preprocessor_state: dict, train_rows: int, label: str) -> dict[str, Any]:
    """What every training worker (or Tune trial) receives: plain JSON-able values."""
    return {"config": cfg.to_dict(), "preprocessor": preprocessor_state, "train_rows": train_rows, "label": label}


def build_trainer(cfg: PipelineConfig, datasets: dict, loop: dict[str, Any], storage_path: str, name: str,
                  callbacks: list | None = None):
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    storage_path, storage_filesystem = storage.ray_storage(storage_path)
    # Plain prints from the workers (one line per epoch), instead of Train re-logging each one.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Each report waits for the controller's poll (2 s by default): with a checkpoint per epoch on
    # small data that wait would dominate the run time.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop,
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker={"CPU": tc.cpus_per_worker}),
        datasets=datasets,
        # preserve_order makes shard contents, and with the seed the whole run, reproducible.
        dataset_config=DataConfig(datasets_to_split="all", execution_options=ExecutionOptions(preserve_order=True)),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=tc.checkpoints_to_keep, checkpoint_score_attribute=tc.metric, checkpoint_score_order=tc.mode
            ),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level=os.environ.get("PIPELINE_TRAIN_LOG_LEVEL", "WARNING")),
        ),
    )


def fit(cfg: PipelineConfig, datasets: dict, preprocessor_state: dict, storage_path: str, name: str, train_rows: int,
        label: str) -> TrainOutcome:
    """Trains (resuming if a run called `name` already has checkpoints in `storage_path`)."""
    trainer = build_trainer(cfg, datasets, loop_config(cfg, preprocessor_state, train_rows, label), storage_path, name)
    result = trainer.fit()
    if result.error:
        raise result.error
    best, best_metrics = result.get_best_checkpoint(cfg.train.metric, cfg.train.mode), None
    for ckpt, metrics in result.best_checkpoints:
        if ckpt.path == best.path:
            best_metrics = metrics
    history = checkpoint_json(result.checkpoint, HISTORY_FILE)  # the latest: its history covers every epoch
    return TrainOutcome(best, best_metrics or {}, history["epochs"], history["resumed_from"], history.get("worker_nodes", []))
