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


def registered_model(tmp_path):
    model_dir = tmp_path / "model"
    save_model_dir(str(model_dir), CNN((1, 8, 8), 10, [8, 8], 16, 0.0, True), {"kind": "image"}, {"task": "image"})
    return str(model_dir)


@pytest.mark.parametrize("bad", ["../..", "../../text/runs/X", "a/b", ".hidden", "", "-x", "run id", "x\n"])
def test_run_ids_and_task_names_are_validated(tmp_path, bad):
    registry = Registry(str(tmp_path / "registry"))
    model_dir = registered_model(tmp_path)
    with pytest.raises(PipelineError, match="run id"):
        registry.register("image", bad, model_dir, {})
    with pytest.raises(PipelineError, match="run id"):
        registry.promote("image", bad)
    with pytest.raises(PipelineError, match="task name"):
        registry.register(bad or "/", "run-1", model_dir, {})
    assert not (tmp_path / "text").exists() and not any((tmp_path / "registry").glob("**/model.safetensors"))


def test_a_run_of_another_task_cannot_be_promoted(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    registry.register("text", "run-1", registered_model(tmp_path), {})
    with pytest.raises(PipelineError, match="no registered image model"):
        registry.promote("image", "run-1")
    # A text run copied under image's runs is still a text run.
    import shutil

    shutil.copytree(tmp_path / "registry" / "text" / "runs" / "run-1", tmp_path / "registry" / "image" / "runs" / "run-1")
    with pytest.raises(PipelineError, match="registered for task 'text'"):
        registry.promote("image", "run-1")


def test_promotion_needs_a_complete_run(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    partial = tmp_path / "registry" / "image" / "runs" / "half"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"x")  # a registration that died after one file
    with pytest.raises(PipelineError, match="incomplete"):
        registry.promote("image", "half")
    assert registry.runs("image") == []


def test_registered_runs_are_never_overwritten(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    model_dir = registered_model(tmp_path)
    registry.register("image", "run-1", model_dir, {"test": {"accuracy": 0.9}})
    registry.promote("image", "run-1")
    with pytest.raises(PipelineError, match="already registered"):
        registry.register("image", "run-1", model_dir, {"test": {"accuracy": 0.1}})
    assert registry.metrics("image", "run-1")["test"]["accuracy"] == 0.9
    assert not [p for p in (tmp_path / "registry" / "image" / "runs").iterdir() if p.name != "run-1"]  # no temp left


def test_concurrent_promotions_do_not_collide(tmp_path):
    import threading

    registry = Registry(str(tmp_path / "registry"))
    model_dir = registered_model(tmp_path)
    for i in range(4):
        registry.register("image", f"run-{i}", model_dir, {})
    errors = []

    def promote(run_id):
        try:
            for _ in range(25):
                registry.promote("image", run_id)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(f"run-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and registry.production("image") in {f"run-{i}" for i in range(4)}
    assert [p.name for p in (tmp_path / "registry" / "image").iterdir() if p.is_file()] == ["production.json"]
