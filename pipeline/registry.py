"""Model registry: a directory per trained model and a `production` pointer per task.

Layout (any local path or URI pyarrow can write, e.g. s3://bucket/registry):
    ROOT/<task>/runs/<run_id>/   model.safetensors (or model.skops) preprocessor.json config.json metrics.json registration.json
    ROOT/<task>/production.json  {"run_id": ..., "promoted_at": ...}
Serve and batch inference load whatever `production` points to.

A run is registered all or nothing: on a local disk its files are written to a staging folder that is
renamed into place; on an object store `registration.json` (task, run id, file sizes) is written last.
Only a run with that marker counts: it is listed, and it can be promoted, for its own task only.
Registered runs are never overwritten. Task names and run ids are plain names (`NAME_PATTERN`), so
no id can reach outside its task's folder.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from typing import Any

from pipeline import storage
from pipeline.errors import ConfigError, PipelineError

MARKER = "registration.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(value: str, what: str = "run id") -> str:
    """`value` if it is a plain name (letters, digits, `._-`, not starting with `.` or `-`), else a one-line error."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-', starting with a letter or "
                          "digit (at most 128 characters)")
    return value


def model_files(model_dir: str) -> tuple[str, ...]:
    """The files that make a model folder: its weights, preprocessor and config."""
    from pipeline.train.checkpoint import CONFIG_FILE, PREPROCESSOR_FILE, weights_file

    return weights_file(model_dir), PREPROCESSOR_FILE, CONFIG_FILE


def default_registry() -> str:
    return os.environ.get("PIPELINE_REGISTRY") or os.path.join(os.path.expanduser("~"), ".pipeline", "registry")


class Registry:
    def __init__(self, root: str | None = None):
        self.root = storage.resolve(root or default_registry())

    def task_uri(self, task: str) -> str:
        return storage.join(self.root, check_name(task, "task name"))

    def run_uri(self, task: str, run_id: str) -> str:
        return storage.join(self.task_uri(task), "runs", check_name(run_id))

    def registration(self, task: str, run_id: str) -> dict[str, Any] | None:
        """The run's completion marker, or None when the run is missing or was never completed."""
        marker = storage.join(self.run_uri(task, run_id), MARKER)
        return storage.read_json(marker) if storage.exists(marker) else None

    def check_new(self, task: str, run_id: str) -> None:
        """Fails before any work when `run_id` is already a registered run of `task`."""
        if self.registration(task, run_id) is not None:
            raise PipelineError(f"{task} run {run_id!r} is already registered in {storage.redact(self.root)}; registered "
                                "runs are never overwritten: choose another --run-id")

    def register(self, task: str, run_id: str, model_dir: str, metrics: dict[str, Any]) -> str:
        target = self.run_uri(task, run_id)
        self.check_new(task, run_id)
        local = not storage.is_remote(target)
        # Local: a staging folder beside the target, renamed into place once complete.
        staging = storage.join(self.task_uri(task), "runs", f".staging-{run_id}-{uuid.uuid4().hex[:8]}") if local else target
        try:
            sizes = {}
            for name in model_files(model_dir):
                data = storage.read_bytes(storage.join(model_dir, name))
                storage.write_bytes(storage.join(staging, name), data)
                sizes[name] = len(data)
            storage.write_json(storage.join(staging, "metrics.json"), metrics)  # redacted, like every text artifact
            marker = {"task": task, "run_id": run_id, "files": sizes, "registered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            storage.write_json(storage.join(staging, MARKER), marker)  # last: on an object store this completes the run
            if local:
                storage.delete_dir(target)  # an earlier attempt that died before completing
                try:
                    storage.rename(staging, target)
                except PipelineError:
                    self.check_new(task, run_id)  # a concurrent registration of the same id won
                    raise
        finally:
            if local:
                storage.delete_dir(staging)
        return target

    def promote(self, task: str, run_id: str) -> None:
        marker = self.registration(task, run_id)
        if marker is None:
            state = "incomplete (its registration never finished)" if storage.exists(self.run_uri(task, run_id)) else "missing"
            raise PipelineError(f"no registered {task} model {run_id!r} in {storage.redact(self.root)}: the run is {state}")
        if marker.get("task") != task:  # e.g. a text run copied under image/runs
            raise PipelineError(f"run {run_id!r} under {task} is registered for task {marker.get('task')!r}; "
                                "promote it for its own task")
        pointer = {"run_id": run_id, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        storage.write_text(storage.join(self.task_uri(task), "production.json"), json.dumps(pointer))

    def production(self, task: str) -> str | None:
        """The run id that serves `task`, or None when nothing was promoted yet."""
        pointer = storage.join(self.task_uri(task), "production.json")
        if not storage.exists(pointer):
            return None
        return check_name(storage.read_json(pointer).get("run_id"), f"run id in {pointer}")

    def production_uri(self, task: str) -> str | None:
        run_id = self.production(task)
        return self.run_uri(task, run_id) if run_id else None

    def runs(self, task: str) -> list[str]:
        """Registered (complete) runs of `task`."""
        names = storage.list_dirs(storage.join(self.task_uri(task), "runs"))
        return [n for n in names if NAME_PATTERN.fullmatch(n) and storage.exists(storage.join(self.run_uri(task, n), MARKER))]

    def metrics(self, task: str, run_id: str) -> dict[str, Any]:
        uri = storage.join(self.run_uri(task, run_id), "metrics.json")
        return storage.read_json(uri) if storage.exists(uri) else {}
