"""The one registry of tasks, and loading a task's config.

A task named N is a module N that defines a `Task` subclass with `name = "N"`, and its defaults in
`N.yaml` beside the module. That YAML may hold an `embedded:` section: settings that describe the task's
embedded data set (its columns, cleaning rules, labels, test file), applied only while `data.source` is
`builtin`; other data (`--data`) starts from the rest, so nothing of the embedded data's shape leaks into it. Built-in tasks are the modules of this package that have such a YAML;
others are modules listed (comma-separated, importable) in $PIPELINE_TASKS, e.g.
`PIPELINE_TASKS=my_project.audio`. The CLI, Serve and the cluster configs all list tasks from here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.config import PipelineConfig, apply_override, deep_merge, validate
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.tasks.base import Task

PLUGINS_ENV = "PIPELINE_TASKS"
HERE = Path(__file__).resolve().parent
DEFAULTS = HERE / "defaults.yaml"
_loaded: dict[str, Any] = {}


def task_modules() -> dict[str, str]:
    """Task name -> module, without importing anything."""
    out = {path.stem: f"{__name__}.{path.stem}" for path in sorted(HERE.glob("*.yaml")) if path != DEFAULTS}
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        out[module.rsplit(".", 1)[-1]] = module
    return out


def task_names() -> list[str]:
    return list(task_modules())


def get_task(name: str) -> "Task":
    from pipeline.tasks.base import Task  # torch and pandas: only once a task is needed (`pipeline --help` stays fast)

    if name in _loaded:
        return _loaded[name]
    modules = task_modules()
    if name not in modules:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(modules)}")
    try:
        module = importlib.import_module(modules[name])
    except ModuleNotFoundError as exc:
        raise ConfigError(f"task {name!r}: cannot import {modules[name]} ({exc}); check ${PLUGINS_ENV}") from None
    found = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Task) and getattr(v, "name", None) == name]
    if len(found) != 1:
        raise ConfigError(f"task module {modules[name]} must define one Task subclass with name = {name!r}")
    _loaded[name] = found[0]()
    return _loaded[name]


def defaults_file(name: str) -> Path:
    spec = importlib.util.find_spec(task_modules()[name])
    path = Path(spec.origin).with_name(f"{name}.yaml") if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ConfigError(f"task {name!r} has no defaults file {name}.yaml beside its module")
    return path


EMBEDDED = "embedded"


def default_config(name: str, embedded: bool = True) -> dict[str, Any]:
    """defaults.yaml, then the task's own YAML (with its `embedded` section, or without it: for other data)."""
    task_raw = read_yaml(defaults_file(name))
    if task_raw.get("task", name) != name:
        raise ConfigError(f"{defaults_file(name)} is for task {task_raw['task']!r}, not {name!r}")
    described = task_raw.pop(EMBEDDED, None) or {}
    raw = deep_merge(read_yaml(DEFAULTS), task_raw)
    return deep_merge(raw, described) if embedded else raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def load_config(task: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """The task's defaults, then the user's YAML file, then dotted `section.key` overrides. The defaults
    describe the embedded data only while the source stays `builtin` (see `default_config`)."""
    cls = get_task(task).config_class
    user = read_yaml(path) if path is not None else {}
    if user.get("task", task) != task:
        raise ConfigError(f"config file {path} is for task {user['task']!r}, not {task!r}")

    def merged(embedded: bool) -> dict[str, Any]:
        raw = deep_merge(default_config(task, embedded), user)
        for dotted, value in (overrides or {}).items():
            apply_override(raw, dotted, value, cls)
        raw["task"] = task
        return raw

    raw = merged(embedded=True)
    if raw.get("data", {}).get("source", "builtin") != "builtin":
        raw = merged(embedded=False)
    return validate(cls, raw)


def config_from_dict(raw: dict[str, Any]) -> PipelineConfig:
    """A complete config as saved with a model or sent to a training worker."""
    return validate(get_task(raw["task"]).config_class, raw)
