"""Task plug-ins: everything that differs between workloads, behind one interface (`base.Task`)."""

from __future__ import annotations

import importlib

from pipeline import TASKS
from pipeline.errors import ConfigError

_CLASSES = {"image": "ImageTask", "text": "TextTask", "tabular": "TabularTask", "recommender": "RecommenderTask"}
_cache: dict = {}


def get_task(name: str):
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if name not in _cache:
        module = importlib.import_module(f"pipeline.tasks.{name}")
        _cache[name] = getattr(module, _CLASSES[name])()
    return _cache[name]


def available_tasks() -> list[str]:
    """Tasks whose plug-in module is present in this installation."""
    out = []
    for name in TASKS:
        try:
            importlib.import_module(f"pipeline.tasks.{name}")
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out
