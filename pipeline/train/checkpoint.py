"""Checkpoint layout, safe to load: weights in safetensors, everything else JSON.

A checkpoint directory is a complete model: `model.safetensors` + `preprocessor.json` +
`config.json` (+ `train_state.pt` with optimizer state for resuming, loaded with weights_only=True).
The registry, Serve and batch inference all read this same layout.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.models import unwrap

MODEL_FILE = "model.safetensors"
PREPROCESSOR_FILE = "preprocessor.json"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"
HISTORY_FILE = "history.json"  # every epoch's metrics so far, for learning curves


def save_model_dir(path: str, model: torch.nn.Module, preprocessor_state: dict, config: dict) -> None:
    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    save_file(state, os.path.join(path, MODEL_FILE))
    write_json(os.path.join(path, PREPROCESSOR_FILE), preprocessor_state)
    write_json(os.path.join(path, CONFIG_FILE), config)


def load_weights(path: str, model: torch.nn.Module) -> torch.nn.Module:
    unwrap(model).load_state_dict(load_file(os.path.join(path, MODEL_FILE)))
    return model


def save_train_state(path: str, state: dict[str, Any]) -> None:
    torch.save(state, os.path.join(path, TRAIN_STATE_FILE))


def load_train_state(path: str) -> dict[str, Any]:
    return torch.load(os.path.join(path, TRAIN_STATE_FILE), weights_only=True, map_location="cpu")


def read_json(path: str) -> Any:
    with open(path) as fh:
        return json.load(fh)


def write_json(path: str, obj: Any) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
