import json

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models.cnn import CNN
from pipeline.registry import Registry
from pipeline.train.checkpoint import load_train_state, load_weights, save_model_dir, save_train_state


def test_model_dir_round_trip_is_safe(tmp_path):
    model = CNN((1, 8, 8), 10, [8, 8], 16, 0.0, True)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    optimizer.step()
    save_model_dir(str(tmp_path), model, {"kind": "image"}, {"task": "image"})
    save_train_state(str(tmp_path), {"optimizer": optimizer.state_dict(), "epoch": 3, "history": [{"epoch": 1, "val_accuracy": 0.5}]})
    fresh = load_weights(str(tmp_path), CNN((1, 8, 8), 10, [8, 8], 16, 0.0, True))
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    state = load_train_state(str(tmp_path))  # weights_only=True: no arbitrary code on load
    assert state["epoch"] == 3 and state["history"][0]["val_accuracy"] == 0.5
    assert json.loads((tmp_path / "preprocessor.json").read_text()) == {"kind": "image"}


def test_registry_register_promote_and_list(tmp_path):
    model_dir = tmp_path / "model"
    save_model_dir(str(model_dir), CNN((1, 8, 8), 10, [8, 8], 16, 0.0, True), {"kind": "image"}, {"task": "image"})
    registry = Registry(str(tmp_path / "registry"))
    assert registry.production("image") is None
    registry.register("image", "run-1", str(model_dir), {"test": {"accuracy": 0.9}})
    registry.register("image", "run-2", str(model_dir), {"test": {"accuracy": 0.95}})
    registry.promote("image", "run-2")
    assert registry.production("image") == "run-2"
    assert registry.runs("image") == ["run-1", "run-2"]
    assert registry.metrics("image", "run-1")["test"]["accuracy"] == 0.9
    with pytest.raises(PipelineError, match="no registered image model"):
        registry.promote("image", "run-3")
