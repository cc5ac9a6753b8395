"""One Ray Serve application for every task: a FastAPI gateway plus one model deployment per task.

Routes: POST /<task>/<route> for each task (image/text/tabular: predict, recommender: recommend),
GET /healthz, GET /models, OpenAPI at /docs. Each model deployment serves its task's `production`
model from the registry and reloads it when the pointer moves (e.g. after `pipeline tune --promote`).
Bad requests answer 422 naming the field; a task without a production model answers 503.
"""

import time
from typing import Any

from fastapi import FastAPI, HTTPException
from ray import serve

import pipeline
from pipeline.registry import Registry
from pipeline.tasks import get_task, task_names
from pipeline.tasks.base import RequestError


class TaskModel:
    """Holds one task's production model; answers predictions as (status, body) pairs."""

    def __init__(self, task_name: str, registry_root: str, reload_interval_s: float = 5.0):
        self.task = get_task(task_name)
        self.registry = Registry(registry_root)
        self.reload_interval_s = reload_interval_s
        self.predictor = None
        self.run_id = None
        self.checked_at = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.checked_at < self.reload_interval_s:
            return
        self.checked_at = now
        run_id = self.registry.production(self.task.name)
        if run_id and run_id != self.run_id:
            from pipeline.predictor import Predictor

            self.predictor = Predictor(self.registry.run_uri(self.task.name, run_id))
            self.run_id = run_id

    def info(self) -> dict[str, Any]:
        self.refresh()
        if self.predictor is None:
            return {"task": self.task.name, "loaded": False}
        metrics = self.registry.metrics(self.task.name, self.run_id)
        return {"task": self.task.name, "loaded": True, "run_id": self.run_id,
                "test": {k: v for k, v in metrics.get("test", {}).items() if isinstance(v, (int, float))}}

    def predict(self, payload: dict[str, Any]) -> tuple[int, Any]:
        self.refresh()
        if self.predictor is None:
            return 503, f"no production model for task {self.task.name!r}; run `pipeline run {self.task.name}` first"
        try:
            return 200, self.task.answer(payload, self.predictor)
        except RequestError as exc:
            return 422, str(exc)


def build_app(registry_root: str, tasks: list[str] | None = None, reload_interval_s: float = 5.0,
              replica_cpus: float = 0.0):
    """The Serve application (bind it with `serve.run`)."""
    tasks = tasks or task_names()
    api = FastAPI(title="Ray deep-learning pipeline", version=pipeline.__version__,
                  description="Image, text, tabular and recommender models served from the registry's production runs.")

    class Gateway:
        def __init__(self, **handles):
            self.handles = handles

        async def call(self, task_name: str, payload: dict) -> Any:
            status, body = await self.handles[task_name].predict.remote(payload)
            if status != 200:
                raise HTTPException(status_code=status, detail=body)
            return body

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "tasks": sorted(self.handles)}

    @api.get("/models")
    async def models(self) -> dict:
        return {"models": [await self.handles[name].info.remote() for name in sorted(self.handles)]}

    # Serve's ingress turns functions whose __qualname__ is inside the class into bound routes.
    for method in (healthz, models):
        method.__qualname__ = f"{Gateway.__qualname__}.{method.__name__}"
        setattr(Gateway, method.__name__, method)
    for name in tasks:
        task = get_task(name)
        endpoint = make_endpoint(name, task.request_model)
        endpoint.__qualname__ = f"{Gateway.__qualname__}.{endpoint.__name__}"
        setattr(Gateway, endpoint.__name__, endpoint)
        api.post(f"/{name}/{task.route}", summary=f"{name}: {task.route}")(endpoint)

    gateway = serve.deployment(name="Gateway", ray_actor_options={"num_cpus": replica_cpus})(serve.ingress(api)(Gateway))
    model = serve.deployment(name="TaskModel", ray_actor_options={"num_cpus": replica_cpus})(TaskModel)
    handles = {name: model.options(name=f"{name}-model").bind(name, registry_root, reload_interval_s) for name in tasks}
    return gateway.bind(**handles)


def make_endpoint(task_name: str, request_model):
    async def endpoint(self, body):
        return await self.call(task_name, body.model_dump())

    endpoint.__annotations__ = {"body": request_model}
    endpoint.__name__ = f"{task_name}_endpoint"
    return endpoint


def app_builder(args: dict[str, Any]):
    """Entry point for Serve config files (`serve deploy cluster/serve_config.yaml`, KubeRay RayService).

    args: registry (URI; on a multi-node cluster shared storage such as s3://..., or a mounted folder with
    shared_storage: true), tasks (list; default: every task the registry of tasks finds, $PIPELINE_TASKS
    included), reload_interval_s, replica_cpus.
    """
    from pipeline.runtime import require_shared_storage

    registry = Registry(args.get("registry"))
    require_shared_storage({"registry": registry.root}, bool(args.get("shared_storage", False)))
    return build_app(registry.root, args.get("tasks"), float(args.get("reload_interval_s", 5.0)),
                     float(args.get("replica_cpus", 0.0)))
