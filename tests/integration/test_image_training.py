"""Ray Train on the image task: reproducible runs, resume after a killed worker, batch inference."""

import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from pipeline.flow import run_pipeline
from pipeline.registry import Registry
from pipeline.tasks import load_config

pytestmark = pytest.mark.usefixtures("ray_session")

QUICK = {"train.epochs": 3, "train.early_stopping.patience": 0}


def quiet(_):
    pass


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-runs")
    metrics = run_pipeline(load_config("image", overrides=QUICK), str(root / "a"), Registry(str(root / "registry")), log=quiet)
    return root, metrics


def test_run_writes_the_metrics_contract(first_run):
    root, metrics = first_run
    on_disk = json.loads((root / "a" / "metrics.json").read_text())
    assert on_disk["task"] == "image" and on_disk["run_id"] == metrics["run_id"]
    for split in ("test", "val"):
        assert 0.9 < on_disk[split]["accuracy"] <= 1.0 and 0.9 < on_disk[split]["macro_f1"] <= 1.0
    assert on_disk["data"]["rows_in"] == on_disk["data"]["rows_kept"] + on_disk["data"]["rows_quarantined"] == 1797
    assert set(on_disk["test"]["per_class"]) == {str(i) for i in range(10)}
    assert len(on_disk["train"]["history"]) == 3
    for name in ("confusion_matrix.png", "learning_curves.png", "data_report.json", "model/model.safetensors", "model/preprocessor.json"):
        assert (root / "a" / name).stat().st_size > 0
    registry = Registry(str(root / "registry"))
    assert registry.production("image") == metrics["run_id"]


def test_same_seed_same_metrics(first_run):
    root, metrics = first_run
    again = run_pipeline(load_config("image", overrides=QUICK), str(root / "b"), Registry(str(root / "registry")), promote=False, log=quiet)
    assert [h["val_loss"] for h in again["train"]["history"]] == [h["val_loss"] for h in metrics["train"]["history"]]
    assert again["test"]["accuracy"] == metrics["test"]["accuracy"]


def test_held_out_rows_scored_by_an_actor_pool_give_the_metrics_the_driver_gave(first_run, tmp_path):
    """Evaluation scores small held-out splits in the driver and large ones through a Ray Data actor pool:
    the same model on the same rows gives the same metrics either way."""
    from pipeline.evaluate import evaluate_model
    from pipeline.flow import prepare_data
    from pipeline.tasks import get_task

    root, metrics = first_run
    task = get_task("image")
    prepared = prepare_data(task, load_config("image", overrides=QUICK), str(tmp_path / "data"), log=quiet)
    pooled = evaluate_model(task, str(root / "a" / "model"), prepared.splits, str(tmp_path), in_process_rows=0)
    for split in ("val", "test"):
        assert pooled[split]["accuracy"] == metrics[split]["accuracy"]
        assert pooled[split]["confusion_matrix"] == metrics[split]["confusion_matrix"]


def alive_training_workers() -> list[int]:
    from ray.util.state import list_actors

    return sorted(a.pid for a in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]))


def run_killing_a_worker_when(ready, cfg, run, registry) -> tuple[dict, int]:
    """`run_pipeline` while a thread SIGKILLs a training worker as soon as `ready()`; its metrics and the
    killed worker's pid."""
    killed: dict = {}

    def kill() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if ready():
                killed["pid"] = alive_training_workers()[-1]
                os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    metrics = run_pipeline(cfg, str(run), Registry(str(registry)), log=quiet)
    killer.join(timeout=10)
    assert killed, "no training worker was killed"
    return metrics, killed["pid"]


def test_small_splits_handed_over_whole_train_as_the_streaming_split_does(first_run, tmp_path, monkeypatch):
    from pipeline.train import trainer

    _, metrics = first_run  # small splits: handed to the workers through the object store
    monkeypatch.setattr(trainer, "IN_MEMORY_BYTES", 0)  # the same run through Ray Train's streaming split
    streamed = run_pipeline(load_config("image", overrides=QUICK), str(tmp_path / "s"), Registry(str(tmp_path / "registry")),
                            promote=False, log=quiet)
    for ours, theirs in zip(metrics["train"]["history"], streamed["train"]["history"]):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["val_accuracy"] == theirs["val_accuracy"]


def test_training_survives_a_killed_worker(tmp_path):
    # Small batches make an epoch last long enough (~1 s) to be killed in the middle of it.
    cfg = load_config("image", overrides={**QUICK, "train.max_failures": 1, "train.batch_size": 8})
    run = tmp_path / "run"

    def epoch_1_is_registered() -> bool:  # the controller has registered epoch 1's checkpoint: kill mid-epoch 2
        return bool(list(run.glob("checkpoints/*/checkpoint_manager_snapshot.json")))

    metrics, pid = run_killing_a_worker_when(epoch_1_is_registered, cfg, run, tmp_path / "registry")
    assert pid not in alive_training_workers()  # a worker really died (SIGKILL) during epoch 2
    assert metrics["train"]["resumed_from_epochs"] == [1]  # and training went on from epoch 1's checkpoint
    assert [h["epoch"] for h in metrics["train"]["history"]] == [1, 2, 3]
    assert metrics["test"]["accuracy"] > 0.9


def test_batch_predict_with_the_production_model(first_run, tmp_path):
    from pipeline.serve.batch import batch_predict
    from sklearn.datasets import load_digits

    root, metrics = first_run
    digits = load_digits()
    ids = np.array([f"d{i:03d}" for i in range(50)])
    np.savez(tmp_path / "in.npz", id=ids, images=digits.images[:50].astype(np.float32))
    registry = Registry(str(root / "registry"))
    rows = batch_predict("image", registry.production_uri("image"), str(tmp_path / "in.npz"), str(tmp_path / "out"))
    assert rows == 50
    out = pd.read_parquet(tmp_path / "out")
    assert {"id", "prediction", "confidence", "probabilities"} <= set(out.columns)
    out = out.sort_values("id")
    assert out["id"].tolist() == ids.tolist()
    accuracy = (out["prediction"].to_numpy() == digits.target[:50].astype(str)).mean()
    assert accuracy >= 0.9


def test_mixed_precision_sgd_and_one_cycle_train(tmp_path):
    cfg = load_config("image", overrides={"train.epochs": 2, "train.amp": True, "train.optimizer": "sgd", "train.lr": 0.05,
                                          "train.schedule.name": "one_cycle", "train.early_stopping.patience": 0})
    metrics = run_pipeline(cfg, str(tmp_path / "run"), Registry(str(tmp_path / "registry")), log=quiet)
    history = metrics["train"]["history"]
    assert history[1]["train_loss"] < history[0]["train_loss"]  # bf16 autocast on CPU still learns
    assert history[0]["lr"] > history[1]["lr"]  # one-cycle anneals within the run
    assert metrics["test"]["accuracy"] > 0.5


def test_small_materialised_splits_skip_the_streaming_split_with_the_same_shards():
    import threading

    import ray
    from ray.data import ExecutionOptions

    from pipeline.train.loop import InMemoryShard
    from pipeline.train.trainer import in_memory_datasets

    one = ray.data.from_pandas(pd.DataFrame({"x": np.arange(10.0), "y": np.arange(10)})).materialize()
    sizes = [5, 40, 3, 17, 0, 29, 8, 11]  # uneven blocks, as a filter or a per-group split leaves them
    starts = np.cumsum([0] + sizes)
    several = ray.data.from_pandas([pd.DataFrame({"y": np.arange(a, a + n)}) for a, n in zip(starts, sizes)]).materialize()
    mapped = several.map_batches(lambda b: b, batch_size=None).materialize()  # as the feature stage leaves them
    assert several.num_blocks() > 1 and mapped.num_blocks() > 1
    # A filter can leave empty blocks without columns.
    filtered = ray.data.range(300, override_num_blocks=6).filter(lambda r: r["id"] >= 120).map_batches(lambda b: {"y": b["id"]}).materialize()
    for data, world in ((several, 2), (several, 3), (mapped, 2), (filtered, 2)):
        handed = in_memory_datasets({"train": data, "val": one}, cache_data=True, world=world)
        ours = [InMemoryShard(handed["train"], rank).tensors()["y"].tolist() for rank in range(world)]
        # What Ray Train's workers get: the equal streaming split, run with preserve_order as trainer.build_trainer asks.
        ds = data.copy(data)
        ds.context.execution_options = ExecutionOptions(preserve_order=True)
        theirs: list = [None] * world

        def consume(rank, split):
            theirs[rank] = [int(v) for batch in split.iter_batches(batch_size=None) for v in batch["y"]]

        threads = [threading.Thread(target=consume, args=(r, s)) for r, s in enumerate(ds.streaming_split(world, equal=True))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert ours == theirs, world
    assert in_memory_datasets({"train": one, "val": one}, cache_data=False, world=2) is None  # streaming was asked for
    assert in_memory_datasets({"train": ray.data.range(10), "val": one}, cache_data=True, world=2) is None  # lazy
    assert in_memory_datasets({"train": one, "val": one}, cache_data=True, world=2, limit=1) is None  # too large


def test_candidates_share_one_worker_group_and_a_killed_worker_resumes_the_one_training(tmp_path):
    """Two candidates train in turn on the same workers; a worker killed during the second one's epoch 2
    restarts the group at that candidate's last checkpoint, and the first one is not trained again."""
    cfg = load_config("image", overrides={**QUICK, "train.max_failures": 1, "train.batch_size": 8,
                                          "candidates.models": {"first": {}, "second": {"train": {"lr": 0.002}}}})
    run = tmp_path / "run"
    ranked = run / "candidates" / "second" / "model.ranked" / "epoch_00001" / "model.safetensors"

    def second_candidates_epoch_1_is_registered() -> bool:  # written, and its checkpoint registered by the controller
        snapshots = list(run.glob("checkpoints/*/checkpoint_manager_snapshot.json"))
        return ranked.exists() and bool(snapshots) and snapshots[0].stat().st_mtime > ranked.stat().st_mtime

    metrics, _ = run_killing_a_worker_when(second_candidates_epoch_1_is_registered, cfg, run, tmp_path / "registry")
    histories = {name: json.loads((run / "candidates" / name / "model" / "history.json").read_text()) for name in ("first", "second")}
    assert histories["first"]["resumed_from"] == [] and len(histories["first"]["loop_started_at"]) == 1  # trained once
    assert histories["second"]["resumed_from"] == [1]  # from its epoch 1 checkpoint
    for name, history in histories.items():
        assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3], name
        assert 1 <= history["best_epoch"] <= 3 and (run / "candidates" / name / "model" / "model.safetensors").exists()
        assert not (run / "candidates" / name / "model.ranked").exists()  # only the best epoch's model stays
    assert set(metrics["candidates"]) == {"first", "second"} and metrics["test"]["accuracy"] > 0.9
    assert len(list(run.glob("checkpoints/*"))) == 1  # one Ray Train run for both


def test_candidates_that_train_alone_share_the_workers_side_by_side_and_resume_as_if_never_killed(tmp_path):
    """`train.data_parallel: false`: two candidates train at the same time, one per worker, after a
    data-parallel one; a worker killed while they train restarts the group, the data-parallel candidate
    is not trained again and each alone candidate resumes from its own latest epoch. Resumed or not, an
    alone candidate is the model data-parallel training gives (`shared` has the same settings)."""
    alone = {"train": {"data_parallel": False}}
    cfg = load_config("image", overrides={**QUICK, "train.max_failures": 1, "train.batch_size": 8,
                                          "candidates.models": {"shared": {}, "a": alone, "b": {"train": {"data_parallel": False, "lr": 0.002}}}})
    run = tmp_path / "run"
    latest = run / "candidates" / "a" / "model.ranked" / "latest.json"  # a's epoch 1 (or a later one) is kept
    metrics, _ = run_killing_a_worker_when(latest.exists, cfg, run, tmp_path / "registry")
    histories = {name: json.loads((run / "candidates" / name / "model" / "history.json").read_text()) for name in ("shared", "a", "b")}
    assert len(histories["shared"]["loop_started_at"]) == 1 and len(histories["shared"]["worker_nodes"][0]) == 2  # DDP, once
    assert all(len(nodes) == 1 for name in "ab" for nodes in histories[name]["worker_nodes"])  # one worker each
    assert len(histories["a"]["resumed_from"]) == 1 and 1 <= histories["a"]["resumed_from"][0] < 3
    a, b = histories["a"], histories["b"]
    assert a["loop_started_at"][0] < b["reported_at"] and b["loop_started_at"][0] < a["reported_at"]  # side by side
    for name, history in histories.items():
        assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3], name
        assert (run / "candidates" / name / "model" / "model.safetensors").exists()
        assert not (run / "candidates" / name / "model.ranked").exists()
    assert len(list(run.glob("checkpoints/*"))) == 1 and metrics["test"]["accuracy"] > 0.9

    for ours, theirs in zip(a["epochs"], histories["shared"]["epochs"], strict=True):  # the model DDP trains
        for metric in ("train_loss", "val_loss", "val_accuracy"):
            assert ours[metric] == pytest.approx(theirs[metric], rel=1e-5), metric
