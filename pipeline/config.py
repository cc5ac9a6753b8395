"""Typed run configuration, loaded from the task's default YAML plus user files and overrides.

Loading is strict: an unknown key is an error naming the key, so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError


@dataclass
class SplitConfig:
    method: str = "stratified"  # random | stratified | grouped | temporal | leave_last_out
    ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    key: list[str] = field(default_factory=lambda: ["id"])  # columns that identify a row
    stratify: str | None = "label"
    group: str | None = None
    time: str | None = None

    def validate(self) -> None:
        if self.method not in ("random", "stratified", "grouped", "temporal", "leave_last_out"):
            raise ConfigError(f"data.split.method must be random, stratified, grouped, temporal or leave_last_out, not {self.method!r}")
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1) > 1e-6:
            raise ConfigError(f"data.split.ratios must be three non-negative numbers summing to 1, got {self.ratios}")
        needed = {"stratified": ["stratify"], "grouped": ["group"], "temporal": ["time"], "leave_last_out": ["group", "time"]}
        for name in needed.get(self.method, []):
            if not getattr(self, name):
                raise ConfigError(f"data.split.method {self.method!r} needs data.split.{name}")


@dataclass
class DataConfig:
    source: str = "builtin"  # "builtin" (embedded data set) or a path / glob / URI
    test_source: str | None = None  # rows used as the test split as they are ("builtin": the embedded test file)
    format: str = "auto"  # auto | csv | tsv | parquet | json | text | images | numpy
    options: dict[str, Any] = field(default_factory=dict)  # task-specific reading options
    schema: dict[str, str] = field(default_factory=dict)  # column -> type
    clean: dict[str, Any] = field(default_factory=dict)  # column -> rules
    dedup: list[str] = field(default_factory=list)  # key columns for de-duplication
    labeling: dict[str, Any] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | step | exp_decay | cosine | one_cycle | warmup_cosine
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.5  # step: decay factor
    decay_start: int = 10  # exp_decay: constant lr before this epoch (the reference design's 10)
    decay_rate: float = 0.1  # exp_decay: lr * exp(rate * (start - epoch)) afterwards
    warmup_epochs: float = 1.0  # warmup_cosine / one_cycle warm-up length
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # epochs without improvement before stopping; 0 disables
    min_delta: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    metric: str = "val_accuracy"  # selects the best checkpoint and drives early stopping
    mode: str = "max"
    amp: bool = False
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: int = 1
    max_failures: int = 2  # restarts from the latest checkpoint after a worker dies
    checkpoints_to_keep: int = 2
    cache_data: bool = True  # keep each worker's shard in memory after the first epoch (small data)
    shuffle_buffer: int = 2048  # local shuffle buffer when streaming (cache_data: false)

    def validate(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"train.optimizer must be adam, adamw or sgd, not {self.optimizer!r}")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"train.mode must be min or max, not {self.mode!r}")
        for name in ("epochs", "batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1")
        if self.lr <= 0:
            raise ConfigError("train.lr must be positive")


@dataclass
class PipelineConfig:
    task: str
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    features: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def default_config_text(task: str) -> str:
    from pipeline import TASKS

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return resources.files("pipeline.configs").joinpath(f"{task}.yaml").read_text()


def load_config(task: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Task defaults, then the user's YAML file, then dotted `section.key` overrides."""
    raw = yaml.safe_load(default_config_text(task)) or {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            user = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        if user.get("task", task) != task:
            raise ConfigError(f"config file {path} is for task {user['task']!r}, not {task!r}")
        raw = deep_merge(raw, user)
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    raw["task"] = task
    cfg = from_dict(PipelineConfig, raw, "")
    cfg.data.split.validate()
    cfg.train.validate()
    from pipeline.tasks import get_task

    get_task(task).validate_config(cfg)
    return cfg


# Sections that describe one table as a whole: a user file that gives one replaces the default
# instead of merging with it (Adult's columns must not leak into someone else's schema).
REPLACED_WHOLE = {("data", "schema"), ("data", "options"), ("data", "clean"), ("data", "labeling")}


def deep_merge(base: dict, update: dict, path: tuple = ()) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path + (key,) not in REPLACED_WHOLE:
            out[key] = deep_merge(out[key], value, path + (key,))
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=0.01` -> ("train.lr", 0.01); the value is parsed as YAML (numbers, lists, bools)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def from_dict(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix(where, k) for k in unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, prefix(where, name))
        else:
            kwargs[name] = coerce(value, hint, prefix(where, name))
    return cls(**kwargs)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Checks scalar types (ints are accepted where floats are expected, e.g. `lr: 1`)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ConfigError(f"{where} must be a {origin.__name__}, got {value!r}")
        return value
    target = hint if hint in (int, float, bool, str) else None
    if origin is not None and target is None:  # Optional[X] / X | None
        target = next((a for a in typing.get_args(hint) if a in (int, float, bool, str)), None)
    if target is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if target is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-3" as a string
        except ValueError:
            pass
    if target is not None and not isinstance(value, target):
        raise ConfigError(f"{where} must be {target.__name__}, got {value!r}")
    if target is int and isinstance(value, bool):
        raise ConfigError(f"{where} must be int, got {value!r}")
    return value


def prefix(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
