"""Executes every notebook's code cells in order, so the walkthroughs never rot."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)
    if "metrics" in namespace:
        assert namespace["metrics"]["test"]["accuracy"] > 0.9
    if "answer" in namespace:
        assert namespace["answer"]["label"] == str(namespace["digits"].target[42])
