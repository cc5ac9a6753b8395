"""The Serve applications: one per task, isolated, plus a small gateway for health, listing and docs.

Routes: POST /<task>/<route> (image/text/tabular: predict, recommender: recommend) served by the task's own
application (`pipeline-<task>`, route prefix /<task>), so a model that fails answers 503 on its own routes
while the others keep serving; GET /healthz, GET /models and OpenAPI at /docs come from the gateway
application (`pipeline`, route prefix /). Each task deployment batches requests (@serve.batch), autoscales,
may hold GPUs, checks its health with a real prediction and follows the registry off the request path
(`pipeline.serve.model`). Every error is JSON: 422 names the field, 413 for a body over the limit, 503 when
a task has no model or does not answer in time.
"""

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve

import pipeline
from pipeline.registry import Registry
from pipeline.serve.settings import ServeSettings, load_serve_settings
from pipeline.tasks import get_task, task_names

GATEWAY_APP = "pipeline"
log = logging.getLogger("pipeline.serve")


def task_app_name(task_name: str) -> str:
    return f"{GATEWAY_APP}-{task_name}"


# --- HTTP hygiene shared by every application --------------------------------------------------------

class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` answers 413 before any parsing."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self.too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def too_large(self, scope, receive, send):
        await JSONResponse({"detail": f"request body larger than the limit of {self.max_bytes:,} bytes"},
                           status_code=413)(scope, receive, send)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field. FastAPI's own handler echoes the input, which fails to render (500) when it
    holds NaN or infinity; location, message and type are what a client needs."""
    detail = [{"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
              for err in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the replica's log"}, status_code=500)


def make_api(title: str, description: str, max_request_bytes: int) -> FastAPI:
    api = FastAPI(title=title, version=pipeline.__version__, description=description)
    api.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(Exception, unexpected_error)
    return api


def bind_route(cls: type, api: FastAPI, method: str, path: str, endpoint, **route_args) -> None:
    """Adds `endpoint` as a method of the ingress class `cls` and as a route of `api` (Serve's ingress
    binds functions whose __qualname__ is inside the class)."""
    endpoint.__qualname__ = f"{cls.__qualname__}.{endpoint.__name__}"
    setattr(cls, endpoint.__name__, endpoint)
    api.api_route(path, methods=[method], **route_args)(endpoint)


# --- one application per task -------------------------------------------------------------------------

def build_task_app(task_name: str, registry_root: str, settings: ServeSettings):
    """The Serve application of one task: a FastAPI ingress deployment that holds the model."""
    task = get_task(task_name)
    deployment = settings.for_task(task_name)
    api = make_api(f"{task_name} model", f"POST /{task_name}/{task.route}: the {task_name} production model.",
                   settings.max_request_bytes)

    class TaskModel:
        def __init__(self, task_name: str, registry_root: str, settings: dict):
            from pipeline.serve.model import ModelServer

            self.settings = ServeSettings.model_validate(settings)
            deployment = self.settings.for_task(task_name)
            device = "cuda" if deployment.num_gpus > 0 else "cpu"
            self.server = ModelServer(task_name, registry_root, self.settings.reload_interval_s, device, self.settings.bf16)
            self.batching = deployment.max_batch_size > 1
            self.answer_batch.set_max_batch_size(deployment.max_batch_size)
            self.answer_batch.set_batch_wait_timeout_s(deployment.batch_wait_timeout_s)

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
        async def answer_batch(self, payloads: list[dict]) -> list[tuple[int, Any]]:
            return await asyncio.to_thread(self.server.answer_many, payloads)

        async def answer(self, payload: dict) -> tuple[int, Any]:
            if self.batching:
                return await self.answer_batch(payload)
            return (await asyncio.to_thread(self.server.answer_many, [payload]))[0]

        def check_health(self) -> None:
            self.server.check()

        def status(self) -> dict[str, Any]:
            return self.server.status()

        def info(self) -> dict[str, Any]:
            return self.server.info()

        def __del__(self):
            self.server.stop()

    async def endpoint(self, body):
        try:
            status, answer = await asyncio.wait_for(self.answer(body.model_dump()), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            status, answer = 503, f"the {task_name} model did not answer within {self.settings.request_timeout_s} s"
        return answer if status == 200 else JSONResponse({"detail": answer}, status_code=status)

    endpoint.__annotations__ = {"body": task.request_model}
    endpoint.__name__ = f"{task_name}_{task.route}"
    bind_route(TaskModel, api, "POST", f"/{task.route}", endpoint, summary=f"{task_name}: {task.route}")
    options = deployment.options()
    return serve.deployment(name=f"{task_name}-model", **options)(serve.ingress(api)(TaskModel)).bind(
        task_name, registry_root, settings.model_dump())


# --- the gateway: health, listing, docs ------------------------------------------------------------------

def build_gateway(tasks: list[str], settings: ServeSettings):
    api = make_api("Ray deep-learning pipeline",
                   "Image, text, tabular and recommender models served from the registry's production runs. "
                   "Each task is its own Serve application; GET /healthz reports each one.", settings.max_request_bytes)

    class Gateway:
        def __init__(self, tasks: list[str]):
            self.tasks = tasks

        async def ask(self, task_name: str, method: str) -> dict[str, Any]:
            try:
                handle = serve.get_app_handle(task_app_name(task_name))
                return await asyncio.wait_for(getattr(handle, method).remote(), 10)
            except Exception as exc:  # noqa: BLE001 - an application that is not running, busy or broken
                return {"task": task_name, "status": "unavailable", "run_id": None, "error": f"{type(exc).__name__}: {exc}"}

    async def healthz(self):
        """200 while at least one task can answer (status ok: all can; degraded: some cannot); 503 when none can."""
        statuses = await asyncio.gather(*(self.ask(name, "status") for name in self.tasks))
        state = ("ok" if all(s["status"] == "ok" for s in statuses)
                 else "degraded" if any(s["run_id"] for s in statuses) else "unavailable")
        body = {"status": state, "tasks": {s["task"]: {k: v for k, v in s.items() if k != "task"} for s in statuses}}
        return body if state != "unavailable" else JSONResponse(body, status_code=503)

    async def models(self):
        return {"models": list(await asyncio.gather(*(self.ask(name, "info") for name in self.tasks)))}

    bind_route(Gateway, api, "GET", "/healthz", healthz)
    bind_route(Gateway, api, "GET", "/models", models)
    for name in tasks:  # the task routes, for /docs; reached only when the task's application is not running
        bind_route(Gateway, api, "POST", f"/{name}/{get_task(name).route}", not_running(name),
                   summary=f"{name}: {get_task(name).route}")
    return serve.deployment(name="Gateway", num_replicas=1, max_ongoing_requests=256,
                            ray_actor_options={"num_cpus": 0})(serve.ingress(api)(Gateway)).bind(sorted(tasks))


def not_running(task_name: str):
    async def endpoint(self, body):
        return JSONResponse({"detail": f"the {task_name} application is not running; see `serve status`"}, status_code=503)

    endpoint.__annotations__ = {"body": get_task(task_name).request_model}
    endpoint.__name__ = f"{task_name}_docs_route"
    return endpoint


def build_apps(registry_root: str, tasks: list[str] | None = None, settings: ServeSettings | None = None) -> list:
    """Every application as `serve.RunTarget`s for `serve.run_many`: the tasks', then the gateway."""
    tasks = tasks or task_names()
    settings = settings or load_serve_settings()
    return [task_target(name, registry_root, settings) for name in tasks] + [gateway_target(tasks, settings)]


def task_target(task_name: str, registry_root: str, settings: ServeSettings):
    return serve.RunTarget(build_task_app(task_name, registry_root, settings), name=task_app_name(task_name), route_prefix=f"/{task_name}")


def gateway_target(tasks: list[str], settings: ServeSettings):
    return serve.RunTarget(build_gateway(tasks, settings), name=GATEWAY_APP, route_prefix="/")


# --- Serve config files (`serve deploy cluster/serve_config.yaml`, KubeRay RayService) -------------------

def registry_arg(args: dict[str, Any]) -> Registry:
    from pipeline.runtime import require_shared_storage

    registry = Registry(args.get("registry"))
    require_shared_storage({"registry": registry.root}, bool(args.get("shared_storage", False)))
    return registry


def settings_arg(args: dict[str, Any]) -> ServeSettings:
    return load_serve_settings(base=args.get("settings") or {})


def task_app_builder(args: dict[str, Any]):
    """One task's application. args: task, registry (URI; on a multi-node cluster shared storage such as
    s3://..., or a mounted folder with shared_storage: true), settings (serve.yaml keys, any subset)."""
    return build_task_app(args["task"], registry_arg(args).root, settings_arg(args))


def gateway_builder(args: dict[str, Any]):
    """The gateway application. args: tasks (list; default: every task), settings."""
    return build_gateway(args.get("tasks") or task_names(), settings_arg(args))
