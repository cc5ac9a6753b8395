"""`pipeline tune`: a laptop-sized sweep with its outputs, a killed sweep resumed, and PBT."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.tasks import load_config
from tests.conftest import REPO, run_cli


def test_image_sweep_writes_table_best_config_plots_and_model(ray_cluster, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli(["tune", "image", "--num-samples", "8", "--epochs", "4", "--output", str(out),
                      "--registry", str(tmp_path / "reg")], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[tune] results (best first)" in result.stdout
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 8 and (table["status"] == "done").all()
    assert {"train.lr", "train.schedule.name", "train.optimizer", "best_val_accuracy", "epochs"} <= set(table.columns)
    assert table["epochs"].sum() < 8 * 4 or table["epochs"].max() == 4  # ASHA may stop trials early
    best = load_config("image", out / "best_config.yaml")  # usable as `pipeline run image --config`
    assert best.train.lr in set(table["train.lr"])
    for name in ("lr_vs_metric.png", "learning_curves.png", "model/model.safetensors", "metrics.json"):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tune"]["trials"] == 8 and metrics["test"]["accuracy"] > 0.8
    assert list((out / "tune").rglob("events.out.tfevents*")), "TensorBoard logs"
    assert (out / "mlflow.db").exists(), "MLflow logging (the mlflow extra is installed by the tests)"


def trial_result_lines(experiment: Path) -> dict[str, int]:
    return {p.parent.name.split("_")[3]: len(p.read_text().splitlines()) for p in experiment.glob("tune_trial_*/result.json")}


def test_a_killed_sweep_resumes_instead_of_starting_over(ray_cluster, tmp_path):
    out = tmp_path / "sweep"
    args = ["tune", "image", "--search", "grid", "--scheduler", "fifo", "--epochs", "5", "--max-concurrent", "1",
            "--set", "tune.grid={train.lr: [0.001, 0.003, 0.01]}", "--set", "train.early_stopping.patience=0",
            "--output", str(out), "--registry", str(tmp_path / "reg"), "--address", ray_cluster.address]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    experiment = out / "tune" / "image-tune"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and 5 not in trial_result_lines(experiment).values():
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait(timeout=60)
    before = trial_result_lines(experiment)
    finished = [trial for trial, lines in before.items() if lines == 5]
    assert finished and sum(before.values()) < 15, before  # killed part-way: one trial done, not all

    result = run_cli([*args[:-2], "--resume"], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming the sweep" in result.stdout
    after = trial_result_lines(experiment)
    assert len(after) == 3 and all(lines >= 5 for lines in after.values())
    for trial in finished:
        assert after[trial] == 5, "a trial that had finished was trained again"
    assert len(pd.read_csv(out / "results.csv")) == 3


def test_pbt_perturbs_learning_rates(ray_cluster, tmp_path):
    out = tmp_path / "pbt"
    result = run_cli(["tune", "tabular", "--scheduler", "pbt", "--num-samples", "4", "--max-concurrent", "4", "--epochs", "8",
                      "--set", "train.early_stopping.patience=0",
                      # Asynchronous PBT with half the population in the bottom quantile: four trials running side
                      # by side pass three perturbation points each, and a trial in the bottom half at one is
                      # exploited. (The synchronous mode hung in three of seven runs on this machine, on a trial
                      # Ray Tune left running but idle after an exploit, as in ray-project/ray#28511; the budget
                      # bounds any such hang.)
                      "--set", "tune.pbt={perturbation_interval: 2, synch: false, quantile_fraction: 0.5}",
                      "--time-budget-s", "300",
                      "--output", str(out), "--registry", str(tmp_path / "reg")],
                     ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "results.csv")
    print(table[["trial_id", "lr_start", "lr_end", "lr_changes", "best_val_accuracy"]])
    assert (table["lr_changes"] > 0).any(), "no trial's learning rate was perturbed by PBT"
    changed = table[table["lr_changes"] > 0]
    assert (changed["lr_start"] != changed["lr_end"]).all()


def test_trials_can_be_multi_worker_train_runs(ray_cluster, tmp_path):
    out = tmp_path / "multi"
    result = run_cli(["tune", "tabular", "--workers-per-trial", "2", "--num-samples", "1", "--epochs", "2",
                      "--max-concurrent", "1", "--output", str(out), "--registry", str(tmp_path / "reg")], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 1 and table["epochs"].iloc[0] == 2 and table["best_val_accuracy"].iloc[0] > 0.7
    assert (out / "model" / "model.safetensors").exists()  # the Ray Train checkpoint, registered
