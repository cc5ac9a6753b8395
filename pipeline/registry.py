"""Model registry: a directory per trained model and a `production` pointer per task.

Layout (any local path or URI pyarrow can write, e.g. s3://bucket/registry):
    ROOT/<task>/runs/<run_id>/   model.safetensors preprocessor.json config.json metrics.json
    ROOT/<task>/production.json  {"run_id": ..., "promoted_at": ...}
Serve and batch inference load whatever `production` points to.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pipeline import storage
from pipeline.errors import PipelineError

MODEL_FILES = ("model.safetensors", "preprocessor.json", "config.json")


def default_registry() -> str:
    return os.environ.get("PIPELINE_REGISTRY") or os.path.join(os.path.expanduser("~"), ".pipeline", "registry")


class Registry:
    def __init__(self, root: str | None = None):
        self.root = storage.resolve(root or default_registry())

    def run_uri(self, task: str, run_id: str) -> str:
        return storage.join(self.root, task, "runs", run_id)

    def register(self, task: str, run_id: str, model_dir: str, metrics: dict[str, Any]) -> str:
        target = self.run_uri(task, run_id)
        for name in MODEL_FILES:
            storage.copy_file(storage.join(model_dir, name), storage.join(target, name))
        storage.write_json(storage.join(target, "metrics.json"), metrics)
        return target

    def promote(self, task: str, run_id: str) -> None:
        if not storage.exists(storage.join(self.run_uri(task, run_id), "model.safetensors")):
            raise PipelineError(f"no registered {task} model {run_id!r} in {self.root}")
        pointer = {"run_id": run_id, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        storage.write_text(storage.join(self.root, task, "production.json"), json.dumps(pointer))

    def production(self, task: str) -> str | None:
        """The run id that serves `task`, or None when nothing was promoted yet."""
        pointer = storage.join(self.root, task, "production.json")
        if not storage.exists(pointer):
            return None
        return storage.read_json(pointer)["run_id"]

    def production_uri(self, task: str) -> str | None:
        run_id = self.production(task)
        return self.run_uri(task, run_id) if run_id else None

    def runs(self, task: str) -> list[str]:
        return storage.list_dirs(storage.join(self.root, task, "runs"))

    def metrics(self, task: str, run_id: str) -> dict[str, Any]:
        uri = storage.join(self.run_uri(task, run_id), "metrics.json")
        return storage.read_json(uri) if storage.exists(uri) else {}
