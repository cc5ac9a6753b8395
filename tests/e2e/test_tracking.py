"""Every `pipeline run` writes TensorBoard event files: read back here record by record (TFRecord framing,
tensorboardX's Event protos), the way TensorBoard reads them."""

from tests.tensorboard_events import read_events


def test_a_run_writes_per_epoch_metrics_lr_and_the_confusion_matrix(image_run):
    m = image_run["metrics"]
    scalars, images = read_events(image_run["output"] / "tensorboard")
    epochs = [h["epoch"] for h in m["train"]["history"]]
    for name in ("train/loss", "val/accuracy", "val/loss", "lr"):
        assert [step for step, _ in scalars[name]] == epochs, name
    for (_, logged), epoch in zip(scalars["val/accuracy"], m["train"]["history"]):  # float32 in the events
        assert abs(logged - epoch["val_accuracy"]) < 1e-6
    assert abs(scalars["test_final/accuracy"][0][1] - m["test"]["accuracy"]) < 1e-6
    assert "test_final/confusion_matrix" in images


def test_every_candidate_has_its_events_baselines_too(text_run):
    m = text_run["metrics"]
    for name, candidate in m["candidates"].items():
        scalars, _ = read_events(text_run["output"] / "candidates" / name / "tensorboard")
        assert abs(scalars["val_final/accuracy"][0][1] - candidate["val"]["accuracy"]) < 1e-6, name
        if candidate["kind"] == "trained":
            assert len(scalars["train/loss"]) >= 1, name
