"""The benchmark's reference server: the same Predictor and task answers in one FastAPI + uvicorn process,
without Ray. Serves POST /<task>/<route> for the tasks given, from the registry's production models.

    python benchmarks/plain_server.py --registry DIR --port 8300 --tasks image text
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402

from pipeline.predictor import Predictor  # noqa: E402
from pipeline.registry import Registry  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402
from pipeline.tasks.base import RequestError  # noqa: E402


def build(registry: Registry, tasks: list[str]) -> FastAPI:
    api = FastAPI()
    for name in tasks:
        task = get_task(name)
        predictor = Predictor(registry.production_uri(name))

        def endpoint(body, task=task, predictor=predictor):  # sync: FastAPI runs it in its thread pool
            try:
                return task.answer(body.model_dump(), predictor)
            except RequestError as exc:
                raise HTTPException(422, str(exc)) from None

        endpoint.__annotations__ = {"body": task.request_model}
        api.post(f"/{name}/{task.route}")(endpoint)
    return api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tasks", nargs="+", default=["image", "text"])
    args = parser.parse_args()
    uvicorn.run(build(Registry(args.registry), args.tasks), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
