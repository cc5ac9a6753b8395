"""`pipeline batch-predict` over a run's own test split gives the test accuracy its metrics.json reports."""

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_cli

# Rebuilds the run's test split exactly as the run did (the served model's config: same data stages,
# same seed) and writes it in the given format, labels included.
WRITE_TEST_SPLIT = """
import sys
import pandas as pd
from pipeline.flow import prepare_data
from pipeline.predictor import load_model_config
from pipeline.runtime import init_ray
from pipeline.tasks import get_task

model, out, fmt = sys.argv[1:4]
init_ray()
cfg = load_model_config(model)
test = prepare_data(get_task(cfg.task), cfg, out + ".prep").splits["test"].to_pandas()
test = test[[c for c in test.columns if not c.startswith("_")]]
test["note"] = pd.array([None if i % 3 == 0 else f"n{i}" for i in range(len(test))], dtype="string")  # not an input, with nulls
if fmt == "parquet":
    test.to_parquet(out)
else:
    test.to_json(out, orient="records", lines=True)
"""


@pytest.mark.parametrize("task,fixture,fmt", [("text", "text_run", "jsonl"), ("tabular", "tabular_run", "parquet")])
def test_batch_predict_reproduces_the_test_accuracy(task, fixture, fmt, request, ray_cluster, tmp_path):
    run = request.getfixturevalue(fixture)
    model = run["output"] / "model"
    split = tmp_path / f"test.{fmt}"
    written = subprocess.run([sys.executable, "-c", WRITE_TEST_SPLIT, str(model), str(split), fmt], cwd=REPO,
                             capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
    assert written.returncode == 0, written.stderr[-3000:]
    result = run_cli(["batch-predict", task, "--registry", str(run["registry"]), "--input", str(split),
                      "--output", str(tmp_path / "predictions"), "--concurrency", "1,2", "--batch-size", "256"], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = pd.read_parquet(tmp_path / "predictions")
    # Columns beside the inputs come out as they went in: text with its nulls, not pickled Python objects.
    assert pa.types.is_string(pq.read_schema(next((tmp_path / "predictions").glob("*.parquet"))).field("note").type)
    assert predictions["note"].isna().sum() == (len(predictions) + 2) // 3
    preprocessor = json.loads((model / "preprocessor.json").read_text())
    label = preprocessor["label_column"]
    metrics = run["metrics"]["test"]
    assert len(predictions) == metrics["rows"]
    accuracy = float((predictions["prediction"].astype(str) == predictions[label].astype(str)).mean())
    print(task, "batch-predict accuracy", accuracy, "metrics.json", metrics["accuracy"])
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-9)
