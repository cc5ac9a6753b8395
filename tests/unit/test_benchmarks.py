"""The benchmarks' own set-up stays in step with the code they measure: `make bench` runs them only
rarely, so a config change that breaks one would otherwise go unnoticed until then."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_stages_pandas_engine_runs_on_a_small_generated_adult_csv(tmp_path):
    data_stages = load("data_stages")
    csv = tmp_path / "adult_like.csv"
    data_stages.generate_csv(csv, 3000)
    cfg = data_stages.adult_config(str(csv))
    assert cfg.data.source == str(csv) and cfg.data.options.column_names[-1] == "income"
    assert data_stages.run_pandas(str(csv), str(tmp_path)) == 3000  # every row read, kept or quarantined
    assert (tmp_path / "quarantine.parquet").exists()
