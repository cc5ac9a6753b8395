"""Network definitions. Each model names the feature column it reads (`input_column`)."""

from __future__ import annotations

import torch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)
