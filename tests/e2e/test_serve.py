"""`pipeline serve` in the foreground, queried over HTTP on 127.0.0.1, then stopped with SIGINT."""

import base64
import io
import json
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.conftest import run_cli
from tests.e2e.conftest import request, start_serve


@pytest.fixture(scope="module")
def server(image_run, tabular_run, text_run, recommender_run, ray_cluster):
    base, proc = start_serve(ray_cluster, image_run["registry"], ["image", "tabular", "text", "recommender"],
                             "--reload-interval", "0.5")
    yield base, proc
    if proc.poll() is None:
        proc.kill()


def test_health_and_models(server, image_run):
    base, _ = server
    assert request(base + "/healthz") == (200, {"status": "ok", "tasks": ["image", "recommender", "tabular", "text"]})
    status, body = request(base + "/models")
    assert status == 200 and body["models"][0]["run_id"] == image_run["metrics"]["run_id"]
    assert [m["task"] for m in body["models"]] == ["image", "recommender", "tabular", "text"]
    assert all(m["loaded"] for m in body["models"])
    assert request(base + "/openapi.json")[0] == 200


def test_test_images_get_the_right_class(server):
    base, _ = server
    digits = load_digits()
    hits = 0
    for i in range(0, 100, 5):
        status, body = request(base + "/image/predict", {"pixels": digits.images[i].tolist()})
        assert status == 200
        assert set(body["probabilities"]) == {str(d) for d in range(10)}
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
        hits += body["label"] == str(digits.target[i])
    assert hits >= 19


def test_png_request(server):
    base, _ = server
    digits = load_digits()
    buf = io.BytesIO()
    Image.fromarray((digits.images[3] * 255 / 16).astype(np.uint8)).save(buf, format="PNG")
    status, body = request(base + "/image/predict", {"image_png_base64": base64.b64encode(buf.getvalue()).decode()})
    assert status == 200 and body["label"] == str(digits.target[3])


@pytest.mark.parametrize("payload,field", [
    ({"pixels": [[1.0, 2.0], [3.0, 4.0]]}, "pixels"),
    ({"pixels": [["a"] * 8] * 8}, "pixels"),
    ({"pixels": [[1.0] * 8] * 7 + [[1.0] * 3]}, "pixels"),
    ({}, "pixels"),
    ({"image_png_base64": "not a png"}, "image_png_base64"),
])
def test_bad_requests_answer_422_naming_the_field(server, payload, field):
    base, _ = server
    status, body = request(base + "/image/predict", payload)
    assert status == 422
    assert field in json.dumps(body["detail"])


ADULT_RECORDS = [  # rows 1 and 3 of adult.test, with their true labels
    ({"age": 25, "workclass": "Private", "fnlwgt": 226802, "education": "11th", "education_num": 7,
      "marital_status": "Never-married", "occupation": "Machine-op-inspct", "relationship": "Own-child", "race": "Black",
      "sex": "Male", "capital_gain": 0, "capital_loss": 0, "hours_per_week": 40, "native_country": "United-States"}, "<=50K"),
    ({"age": 44, "workclass": "Private", "fnlwgt": 160323, "education": "Some-college", "education_num": 10,
      "marital_status": "Married-civ-spouse", "occupation": "Machine-op-inspct", "relationship": "Husband", "race": "Black",
      "sex": "Male", "capital_gain": 7688, "capital_loss": 0, "hours_per_week": 40, "native_country": "United-States"}, ">50K"),
]


def test_tabular_records_get_the_right_class(server):
    base, _ = server
    for record, label in ADULT_RECORDS:
        status, body = request(base + "/tabular/predict", record)
        assert status == 200, body
        assert body["label"] == label and set(body["probabilities"]) == {"<=50K", ">50K"}
    missing_value = {**ADULT_RECORDS[0][0], "workclass": None}  # imputed, as in training
    assert request(base + "/tabular/predict", missing_value)[0] == 200


def test_tabular_bad_records_answer_422_naming_fields(server):
    base, _ = server
    record = dict(ADULT_RECORDS[0][0])
    del record["age"]
    status, body = request(base + "/tabular/predict", {**record, "salary": 10})
    assert status == 422 and "missing field(s): age" in body["detail"] and "unknown field(s): salary" in body["detail"]
    status, body = request(base + "/tabular/predict", {**ADULT_RECORDS[0][0], "hours_per_week": "lots"})
    assert status == 422 and "hours_per_week" in body["detail"]


def test_text_predictions(server):
    base, _ = server
    status, body = request(base + "/text/predict", {"texts": ["I love this phone, the battery is great.",
                                                               "Terrible food and rude staff, never again."]})
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == ["positive", "negative"]
    status, body = request(base + "/text/predict", {"text": "Great value."})
    assert status == 200 and len(body["predictions"]) == 1 and 0.5 <= body["predictions"][0]["probability"] <= 1.0


@pytest.mark.parametrize("payload,field", [
    ({"text": "   "}, "text"),
    ({"text": "x" * 6000}, "text"),
    ({"texts": ["ok", ""]}, "texts[1]"),
    ({"text": 42}, "text"),
    ({}, "text"),
])
def test_text_bad_requests_answer_422(server, payload, field):
    base, _ = server
    status, body = request(base + "/text/predict", payload)
    assert status == 422 and field in json.dumps(body["detail"])


def test_recommendations_for_a_known_user_exclude_rated_movies(server):
    base, _ = server
    import gzip

    from pipeline.tasks.recommender import builtin_path

    with gzip.open(builtin_path("ratings.csv.gz"), "rt") as fh:
        ratings = pd.read_csv(fh)
    rated = set(ratings[ratings["userId"] == 15]["movieId"])
    status, body = request(base + "/recommender/recommend", {"user_id": 15, "k": 10})
    assert status == 200 and body["known_user"] and body["method"] == "model"
    movies = body["recommendations"]
    assert len(movies) == 10 and all(m["title"] for m in movies)
    assert not {m["movie_id"] for m in movies} & rated
    scores = [m["score"] for m in movies]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_popular_movies_and_is_told(server):
    base, _ = server
    status, body = request(base + "/recommender/recommend", {"user_id": 999999, "k": 5})
    assert status == 200 and not body["known_user"] and body["method"] == "popular"
    assert "not in the training data" in body["note"] and len(body["recommendations"]) == 5


def test_new_user_from_genre_preferences(server):
    base, _ = server
    status, body = request(base + "/recommender/recommend", {"genres": {"Animation": 1.0, "Children": 1.0}, "k": 10})
    assert status == 200 and len(body["recommendations"]) == 10
    status, body = request(base + "/recommender/recommend", {"genres": {"Cartoons": 1.0}})
    assert status == 422 and "Cartoons" in body["detail"]
    status, body = request(base + "/recommender/recommend", {"user_id": 1, "k": 1000})
    assert status == 422 and "k" in json.dumps(body["detail"])


def test_promoting_a_tuned_model_makes_serve_load_it(server, image_run, ray_cluster, tmp_path):
    base, _ = server
    result = run_cli(["tune", "image", "--num-samples", "2", "--epochs", "3", "--output", str(tmp_path / "sweep"),
                      "--registry", str(image_run["registry"]), "--promote"], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    tuned = json.loads((tmp_path / "sweep" / "metrics.json").read_text())["run_id"]
    assert tuned != image_run["metrics"]["run_id"]
    for _ in range(60):  # the model deployment re-reads the production pointer every 0.5 s here
        models = {m["task"]: m for m in request(base + "/models")[1]["models"]}
        if models["image"].get("run_id") == tuned:
            break
        time.sleep(1)
    else:
        pytest.fail("Serve did not switch to the promoted model")
    status, body = request(base + "/image/predict", {"pixels": load_digits().images[0].tolist()})
    assert status == 200 and body["run_id"] == tuned


def test_sigint_shuts_down_cleanly(server):
    _, proc = server
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("pipeline serve did not stop within 90 s of SIGINT")
    assert proc.returncode == 0, out[-2000:]
    assert "shutting down Serve" in out
