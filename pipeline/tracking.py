"""Experiment tracking of a run.

- TensorBoard, always: event files for every candidate (per-epoch training and validation metrics, the
  learning rate, the held-out metrics and the test confusion matrix as an image), written to a local
  temporary folder by tensorboardX and copied to the run's storage URI, so `tensorboard --logdir
  <output>` works on a laptop and on a run stored in S3 alike.
- MLflow, when asked (`--mlflow`, `--mlflow-uri`): params, per-epoch metrics, plots and the model folder
  of the served candidate, the model as a registered-model version, and the registry's production
  pointer mirrored as that registered model's `production` alias.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

import numpy as np

from pipeline import storage
from pipeline.errors import PipelineError

SKIPPED = {"epoch", "base_lr", "stopped_early"}  # the step itself, PBT's unscheduled lr, a flag


def tag(key: str) -> str:
    """`train_loss` -> `train/loss`, `val_ndcg@10` -> `val/ndcg@10`; others as they are."""
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1:]}"
    return key


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """An epoch's numeric metrics by tag, without the step itself and the flags."""
    return {tag(k): float(v) for k, v in record.items() if k not in SKIPPED and isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_events(uri: str, history: list[dict[str, Any]], evaluated: dict[str, dict], confusion_png: str | None = None) -> None:
    """Event files under `uri`: one step per epoch of `history`, then the final `evaluated` val and test
    metrics (at the last epoch's step, 0 for a fitted baseline) and the confusion matrix PNG."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp, flush_secs=3600)
        step = 0
        for record in history:
            step = int(record.get("epoch", step + 1))
            for name, value in epoch_scalars(record).items():
                writer.add_scalar(name, value, step)
        for split, metrics in evaluated.items():
            for key, value in metrics.items():
                if isinstance(value, float):
                    writer.add_scalar(f"{split}_final/{key}", value, step)
        if confusion_png and storage.exists(confusion_png):
            from PIL import Image

            image = np.asarray(Image.open(io.BytesIO(storage.read_bytes(confusion_png))).convert("RGB"))
            writer.add_image("test_final/confusion_matrix", image, step, dataformats="HWC")
        writer.close()
        storage.copy_dir(tmp, uri)


# --- MLflow (optional: `pip install 'ray-dl-pipeline[mlflow]'`) -------------------------------------

MLFLOW_ALIAS = "production"  # the registry's production pointer, mirrored on the MLflow registered model


def mlflow_uri(requested: str | None, enabled: bool, output_dir: str) -> str | None:
    """Where a run logs to MLflow: `--mlflow-uri`, else with `--mlflow` a SQLite store in a local output
    folder (MLflow 3 keeps its plain-file store in maintenance mode); None: MLflow is off."""
    if not (requested or enabled):
        return None
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise PipelineError("MLflow logging needs mlflow: pip install 'ray-dl-pipeline[mlflow]'") from None
    if requested:
        return requested
    if storage.is_remote(output_dir):
        raise PipelineError("--mlflow keeps its store in the output folder, which must then be local; give --mlflow-uri "
                            "(a tracking server) for an output in object storage")
    return "sqlite:///" + os.path.join(os.path.abspath(output_dir), "mlflow.db")


def registered_model(task: str) -> str:
    return f"pipeline-{task}"


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as MLflow params: dotted keys, values as text (MLflow caps a value at 6,000 characters)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = str(value)[:6000]
    return out


def log_mlflow_run(uri: str, task: str, metrics: dict[str, Any], config: dict[str, Any], model_dir: str, output_dir: str) -> dict:
    """The run in MLflow: the served candidate's config as params, its epochs as metric history, the held-out
    metrics, the plots and metrics.json and the model folder as artifacts, and the model as a new version of
    the registered model `pipeline-<task>` (tagged with the pipeline's run id). Returns where it went."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"pipeline-{task}")
    client = MlflowClient(uri)
    with mlflow.start_run(run_name=metrics["run_id"]) as run:
        mlflow.set_tags({"pipeline.task": task, "pipeline.run_id": metrics["run_id"], "pipeline.served_model": metrics["served_model"]})
        mlflow.log_params(flat_params(config))
        for record in metrics["train"].get("history", []):
            mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in epoch_scalars(record).items()}, step=int(record["epoch"]))
        for split in ("val", "test"):
            mlflow.log_metrics({f"{split}_final/{k}".replace("@", "_at_"): v for k, v in metrics[split].items() if isinstance(v, float)})
        with tempfile.TemporaryDirectory() as tmp:
            storage.copy_dir(model_dir, os.path.join(tmp, "model"))
            mlflow.log_artifacts(os.path.join(tmp, "model"), "model")
            mlflow.log_dict({k: v for k, v in metrics.items() if k != "mlflow"}, "metrics.json")
            for name in ("data_report.json", "confusion_matrix.png", "learning_curves.png"):
                uri_of = storage.join(output_dir, name)
                if storage.exists(uri_of):
                    local = os.path.join(tmp, name)
                    storage.write_bytes(local, storage.read_bytes(uri_of))
                    mlflow.log_artifact(local)
        artifact_uri = run.info.artifact_uri
    name = registered_model(task)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"The pipeline's {task} models; alias {MLFLOW_ALIAS}: the registry's production run")
    version = client.create_model_version(name, f"{artifact_uri}/model", run_id=run.info.run_id,
                                          tags={"pipeline_run_id": metrics["run_id"]})
    return {"tracking_uri": storage.redact(uri), "run_id": run.info.run_id, "registered_model": name, "version": int(version.version)}


def mirror_production(uri: str, task: str, pipeline_run_id: str) -> int | None:
    """Points the registered model's `production` alias at the version of `pipeline_run_id`; its version,
    or None when that run was never logged to this MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.search_model_versions(f"name = '{registered_model(task)}' and tags.pipeline_run_id = '{pipeline_run_id}'")
    if not found:
        return None
    version = max(int(v.version) for v in found)
    client.set_registered_model_alias(registered_model(task), MLFLOW_ALIAS, str(version))
    return version
