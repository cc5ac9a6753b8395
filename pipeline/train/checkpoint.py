"""Checkpoint layout, safe to load: weights in safetensors, everything else JSON.

A checkpoint directory is a complete model: `model.safetensors` (or, for a scikit-learn baseline,
`model.skops`: skops' secure format, which loads only the types it is told to trust) +
`preprocessor.json` + `config.json` (+ `train_state.pt` with optimizer state for resuming, loaded with
weights_only=True).
The registry, Serve and batch inference all read this same layout.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import torch
from safetensors.torch import load, save_file

from pipeline import storage
from pipeline.errors import PipelineError
from pipeline.models import unwrap
from pipeline.models.baselines import SklearnClassifier
from pipeline.storage import json_bytes, write_bytes

MODEL_FILE = "model.safetensors"
SKOPS_FILE = "model.skops"
WEIGHT_FILES = (MODEL_FILE, SKOPS_FILE)  # a model folder holds one of them
# Types in a skops file that skops does not trust by itself, but these estimators are made of.
TRUSTED_SKOPS_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)
PREPROCESSOR_FILE = "preprocessor.json"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"
HISTORY_FILE = "history.json"  # every epoch's metrics so far, for learning curves


def save_model_dir(path: str, model: torch.nn.Module, preprocessor_state: dict | bytes, config: dict | bytes) -> None:
    """A model folder. The preprocessor state and config may come as `storage.json_bytes` already: a
    training loop encodes them once instead of every epoch (a recommender's state is MBs of JSON)."""
    os.makedirs(path, exist_ok=True)
    net = unwrap(model)
    if isinstance(net, SklearnClassifier):
        import skops.io

        write_bytes(os.path.join(path, SKOPS_FILE), skops.io.dumps(net.estimator))
    else:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, os.path.join(path, MODEL_FILE))
    for name, content in ((PREPROCESSOR_FILE, preprocessor_state), (CONFIG_FILE, config)):
        write_bytes(os.path.join(path, name), content if isinstance(content, bytes) else json_bytes(content))


def load_weights(uri: str, model: torch.nn.Module) -> torch.nn.Module:
    """Weights (or a scikit-learn estimator) from a model folder at any storage URI, read into memory."""
    net = unwrap(model)
    if isinstance(net, SklearnClassifier):
        net.estimator = load_skops(storage.read_bytes(storage.join(uri, SKOPS_FILE)), uri)
    else:
        net.load_state_dict(load(storage.read_bytes(storage.join(uri, MODEL_FILE))))
    return model


def load_skops(data: bytes, uri: str):
    """An estimator from skops bytes, refusing any type beyond skops' own trusted ones and ours."""
    import skops.io

    untrusted = [t for t in skops.io.get_untrusted_types(data=data) if t not in TRUSTED_SKOPS_TYPES]
    if untrusted:
        raise PipelineError(f"{storage.redact(uri)}/{SKOPS_FILE} holds types that are not trusted to load: {', '.join(untrusted)}")
    return skops.io.loads(data, trusted=list(TRUSTED_SKOPS_TYPES))


def weights_file(uri: str) -> str:
    """The name of the weight file a model folder holds."""
    for name in WEIGHT_FILES:
        if storage.exists(storage.join(uri, name)):
            return name
    raise PipelineError(f"{storage.redact(uri)} holds no model weights ({' or '.join(WEIGHT_FILES)})")


def save_train_state(path: str, state: dict[str, Any]) -> None:
    torch.save(state, os.path.join(path, TRAIN_STATE_FILE))


def load_train_state(path: str) -> dict[str, Any]:
    return torch.load(os.path.join(path, TRAIN_STATE_FILE), weights_only=True, map_location="cpu")


def checkpoint_json(checkpoint, name: str) -> Any:
    """One JSON file of a Ray Train/Tune checkpoint, read where it is stored (local or object store)."""
    return storage.read_json((checkpoint.filesystem, posixpath.join(checkpoint.path, name)))


def copy_checkpoint(checkpoint, uri: str) -> None:
    """A Ray checkpoint's files into the model folder `uri` (which it replaces)."""
    storage.copy_dir((checkpoint.filesystem, checkpoint.path), uri)
