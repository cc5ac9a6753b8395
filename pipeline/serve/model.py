"""One task's production model inside a Serve replica, kept current off the request path.

A background thread re-reads the registry's `production` pointer every `reload_interval_s` and loads a
newly promoted run beside the serving one; requests always see a complete (predictor, run id) pair,
swapped in one assignment, so a promotion drops no request. A registry that cannot be read, or a run
that does not load, leaves the serving model in place and is reported by `status()`; only a replica
that never loaded a model answers 503.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple

from pipeline.registry import Registry
from pipeline.tasks import get_task
from pipeline.tasks.base import RequestError

log = logging.getLogger("pipeline.serve")


class Loaded(NamedTuple):
    predictor: Any
    run_id: str


class ModelServer:
    def __init__(self, task_name: str, registry_root: str, reload_interval_s: float = 5.0, device: str = "auto",
                 bf16: bool = True, refresh_in_background: bool = True):
        self.task = get_task(task_name)
        self.registry = Registry(registry_root)
        self.reload_interval_s = reload_interval_s
        self.device, self.bf16 = device, bf16
        self.loaded: Loaded | None = None
        self.error: str | None = None  # the last load or registry problem, None once resolved
        self.failed_run: str | None = None  # a run that did not load: not retried until the pointer moves
        self.checked_at: float | None = None
        self.batches = self.requests = 0  # answered so far: their ratio is the mean batch size
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        if refresh_in_background:
            threading.Thread(target=self._refresh_loop, name=f"{task_name}-model-refresh", daemon=True).start()

    # --- keeping the model current ------------------------------------------------------------------
    def refresh(self) -> None:
        """Loads the production run if it changed. Never raises: problems land in `self.error`."""
        with self._refresh_lock:
            try:
                run_id = self.registry.production(self.task.name)
            except Exception as exc:  # noqa: BLE001 - storage errors of every kind; keep serving
                self.error = f"cannot read the registry's production pointer: {exc}"
                log.warning("%s: %s", self.task.name, self.error)
                return
            self.checked_at = time.time()
            serving = self.loaded.run_id if self.loaded else None
            if run_id is None:
                self.error = None if serving else "no production model yet"
                return
            if run_id == serving:
                self.error = None
                return
            if run_id == self.failed_run:
                return
            try:
                from pipeline.predictor import Predictor

                predictor = Predictor(self.registry.run_uri(self.task.name, run_id), self.device, self.bf16)
                self.check(Loaded(predictor, run_id))
            except Exception as exc:  # noqa: BLE001 - a broken model must not take the replica down
                self.failed_run = run_id
                self.error = f"run {run_id} did not load: {type(exc).__name__}: {exc}"
                log.error("%s: %s%s", self.task.name, self.error, f"; still serving {serving}" if serving else "")
                return
            self.loaded, self.error, self.failed_run = Loaded(predictor, run_id), None, None
            log.info("%s: serving run %s", self.task.name, run_id)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.reload_interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()

    # --- answering ----------------------------------------------------------------------------------
    def answer_many(self, payloads: list[dict]) -> list[tuple[int, Any]]:
        """(HTTP status, body) for each validated request, in order: 200, 422 naming the field, or 503."""
        loaded = self.loaded  # one read: a swap during the batch cannot mix two models
        if loaded is None:
            reason = self.error or "no production model yet"
            return [(503, f"task {self.task.name!r} has no model to serve: {reason}")] * len(payloads)
        answers = self.task.answer_batch(payloads, loaded.predictor)
        self.batches, self.requests = self.batches + 1, self.requests + len(payloads)
        return [(422, str(a)) if isinstance(a, RequestError) else (200, a) for a in answers]

    def check(self, loaded: Loaded | None = None) -> None:
        """A real prediction on the task's example request; raises when it does not answer 200."""
        loaded = loaded or self.loaded
        if loaded is None:
            return  # nothing to check: the replica is healthy and answers 503 with the reason
        request, _ = self.task.example_request()
        payload = self.task.request_model.model_validate(request).model_dump()
        answer = self.task.answer_batch([payload], loaded.predictor)[0]
        if isinstance(answer, RequestError):
            raise RuntimeError(f"the example request failed on run {loaded.run_id}: {answer}")

    def status(self) -> dict[str, Any]:
        state = "ok" if self.loaded and not self.error else "degraded" if self.loaded else "unavailable"
        return {"task": self.task.name, "status": state, "run_id": self.loaded.run_id if self.loaded else None,
                "device": str(self.loaded.predictor.device) if self.loaded else None, "error": self.error,
                "checked_at": self.checked_at, "requests": self.requests,
                "mean_batch_size": round(self.requests / self.batches, 2) if self.batches else None}

    def info(self) -> dict[str, Any]:
        out = self.status()
        if self.loaded:
            try:
                metrics = self.registry.metrics(self.task.name, self.loaded.run_id)
            except Exception as exc:  # noqa: BLE001 - the model still serves; say why its metrics are missing
                out["metrics_error"] = f"{type(exc).__name__}: {exc}"
            else:
                out["test"] = {k: v for k, v in metrics.get("test", {}).items() if isinstance(v, (int, float))}
        return out
