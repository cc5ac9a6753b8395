"""The tabular workload on UCI Adult through the CLI: accuracy on Adult's own test file, outputs."""

import json

import pandas as pd

from tests.conftest import run_cli


def test_run_tabular_reaches_the_target_accuracy(tabular_run):
    metrics = tabular_run["metrics"]
    print("tabular test accuracy", metrics["test"]["accuracy"], "macro-F1", metrics["test"]["macro_f1"])
    assert metrics["test"]["accuracy"] >= 0.86  # issue 13's target (seed 42: the MLP 0.8723, gradient boosting 0.8732)
    assert metrics["test"]["rows"] == 16281  # every row of adult.test, evaluated as it is
    assert metrics["data"]["rows_in"] == 48842 == metrics["data"]["rows_kept"] + metrics["data"]["rows_quarantined"]
    out = tabular_run["output"]
    report = json.loads((out / "data_report.json").read_text())
    assert report["nulls"]["workclass"] == 2799 and report["nulls"]["occupation"] == 2809
    assert report["labeling"]["income"] == {"coverage": 1.0, "conflicts": 0.0}
    quarantine = pd.read_parquet(out / "quarantine")
    assert "reason" in quarantine.columns and len(quarantine) == metrics["data"]["rows_quarantined"]


def test_data_command_on_adult(ray_cluster, tmp_path):
    result = run_cli(["data", "tabular", "--output", str(tmp_path)], ray_cluster)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nulls per column" in result.stdout and "labeling income: coverage 100.0%" in result.stdout
    assert "class balance test" in result.stdout


def test_unknown_column_in_a_rule_fails_at_config_load(tmp_path):
    result = run_cli(["data", "tabular", "--set", "data.clean.salary={required: true}"])
    assert result.returncode == 2
    assert "data.clean.salary: column 'salary' is not in data.schema" in result.stderr
