"""Learning-rate schedules as pure functions of progress, so resuming needs no scheduler state.

`lr_factor` multiplies the configured base learning rate. `epoch` is fractional (epoch index plus
the fraction of the epoch done) for the per-step schedules; the epoch-wise ones use its floor.
"""

from __future__ import annotations

import math

from pipeline.config import SCHEDULES, ScheduleConfig
from pipeline.errors import ConfigError


def lr_factor(cfg: ScheduleConfig, epoch: float, total_epochs: int) -> float:
    name = cfg.name
    whole = int(math.floor(epoch))
    progress = min(max(epoch / max(total_epochs, 1), 0.0), 1.0)
    if name == "constant":
        return 1.0
    if name == "step":
        return cfg.gamma ** (whole // max(cfg.step_size, 1))
    if name == "exp_decay":
        # The reference design: lr while epoch < N, then lr * exp(rate * (N - epoch)).
        return 1.0 if whole < cfg.decay_start else math.exp(cfg.decay_rate * (cfg.decay_start - whole))
    if name == "cosine":
        return cosine(progress, cfg.min_lr_ratio)
    if name == "warmup_cosine":
        warm = min(cfg.warmup_epochs, total_epochs)
        if epoch < warm:
            return max(epoch / warm, 1e-3)
        rest = (epoch - warm) / max(total_epochs - warm, 1e-9)
        return cosine(min(rest, 1.0), cfg.min_lr_ratio)
    if name == "one_cycle":
        # Linear ramp from lr/25 to lr over the warm-up, then cosine annealing to lr/1e4 (as PyTorch's OneCycleLR).
        warm = min(max(cfg.warmup_epochs, 1e-9), total_epochs)
        if epoch < warm:
            return 0.04 + 0.96 * epoch / warm
        rest = (epoch - warm) / max(total_epochs - warm, 1e-9)
        return cosine(min(rest, 1.0), 1e-4)
    raise ConfigError(f"unknown LR schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def cosine(progress: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
