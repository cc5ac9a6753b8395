"""Serve settings: deployment sizes, batching and request limits, from serve.yaml, a user file and flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, model_validator

from pipeline.config import Section, apply_override, config_error, deep_merge, problem

DEFAULTS = Path(__file__).with_name("serve.yaml")


class DeploymentSettings(Section):
    min_replicas: NonNegativeInt
    max_replicas: PositiveInt
    target_ongoing_requests: PositiveFloat
    upscale_delay_s: NonNegativeFloat
    downscale_delay_s: NonNegativeFloat
    max_ongoing_requests: PositiveInt
    max_queued_requests: int
    num_cpus: NonNegativeFloat
    num_gpus: NonNegativeFloat
    max_batch_size: PositiveInt
    batch_wait_timeout_s: NonNegativeFloat
    health_check_period_s: PositiveFloat
    access_log: bool

    @model_validator(mode="after")
    def consistent(self):
        if self.min_replicas > self.max_replicas:
            raise problem("min_replicas", f"{self.min_replicas} is more than max_replicas ({self.max_replicas})")
        if self.max_batch_size > self.max_ongoing_requests:
            raise problem("max_batch_size", f"{self.max_batch_size} is more than max_ongoing_requests "
                                            f"({self.max_ongoing_requests}), so a batch could never fill")
        if self.max_queued_requests < -1 or self.max_queued_requests == 0:
            raise problem("max_queued_requests", "must be positive, or -1 for an unbounded queue")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword arguments of `serve.deployment` / `.options`."""
        return {
            "autoscaling_config": {"min_replicas": self.min_replicas, "initial_replicas": max(self.min_replicas, 1),
                                   "max_replicas": self.max_replicas, "target_ongoing_requests": self.target_ongoing_requests,
                                   "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "health_check_period_s": self.health_check_period_s,
            "logging_config": {"enable_access_log": self.access_log},
        }


class ServeSettings(Section):
    deployment: DeploymentSettings
    tasks: dict[str, dict[str, Any]]
    max_request_bytes: PositiveInt
    request_timeout_s: PositiveFloat
    reload_interval_s: PositiveFloat
    bf16: bool

    @model_validator(mode="after")
    def overrides_are_valid(self):
        for name in self.tasks:
            self.for_task(name)
        return self

    def for_task(self, name: str) -> DeploymentSettings:
        try:
            return DeploymentSettings.model_validate({**self.deployment.model_dump(), **self.tasks.get(name, {})})
        except ValidationError as exc:
            raise problem(f"tasks.{name}", str(config_error(exc, DeploymentSettings))) from None


def load_serve_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                        base: dict[str, Any] | None = None) -> ServeSettings:
    """serve.yaml, then `base` (a nested partial, e.g. a Serve config file's `settings`), the user's file, and
    dotted overrides (`deployment.max_batch_size`: 1)."""
    from pipeline.tasks import read_yaml

    raw = yaml.safe_load(DEFAULTS.read_text())
    raw = deep_merge(raw, base or {})
    if path is not None:
        raw = deep_merge(raw, read_yaml(path))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            apply_override(raw, dotted, value, ServeSettings)
    try:
        return ServeSettings.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, ServeSettings) from None
