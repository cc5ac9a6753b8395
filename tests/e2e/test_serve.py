"""`pipeline serve` in the foreground, queried over HTTP on 127.0.0.1, then stopped with SIGINT."""

import base64
import io
import json
import shutil
import signal
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.datasets import load_digits

from tests.conftest import RAY, run_cli
from pipeline.tasks import get_task
from tests.e2e.conftest import post_raw, request, start_serve, stop_serve


@pytest.fixture(scope="module")
def server(image_run, tabular_run, text_run, recommender_run, ray_cluster):
    base, proc = start_serve(ray_cluster, image_run["registry"], ["image", "tabular", "text", "recommender"],
                             "--reload-interval", "0.5")
    yield base, proc
    if proc.poll() is None:
        proc.kill()


def test_health_and_models(server, image_run):
    base, _ = server
    status, health = request(base + "/healthz")
    assert status == 200 and health["status"] == "ok"
    assert sorted(health["tasks"]) == ["image", "recommender", "tabular", "text"]
    assert all(t["status"] == "ok" and t["run_id"] and t["error"] is None for t in health["tasks"].values())
    assert health["tasks"]["image"]["run_id"] == image_run["metrics"]["run_id"]
    status, body = request(base + "/models")
    assert status == 200 and body["models"][0]["run_id"] == image_run["metrics"]["run_id"]
    assert [m["task"] for m in body["models"]] == ["image", "recommender", "tabular", "text"]
    assert body["models"][0]["test"]["accuracy"] == image_run["metrics"]["test"]["accuracy"]
    status, openapi = request(base + "/openapi.json")
    assert status == 200 and {"/image/predict", "/text/predict", "/tabular/predict", "/recommender/recommend"} <= set(openapi["paths"])


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


def readme_curls() -> list[tuple[str, dict | None]]:
    """(path, JSON body or None for a GET) of every `curl` example in README."""
    import re

    from tests.conftest import REPO

    found = []
    for line in (REPO / "README.md").read_text().splitlines():
        match = re.match(r"curl -s localhost:8000(/\S*)(?: .* -d '(.*)')?$", line.strip())
        if match:
            found.append((match.group(1), json.loads(match.group(2)) if match.group(2) else None))
    return found


def test_every_readme_curl_example_answers_200_and_covers_every_route(server):
    base, _ = server
    examples = readme_curls()
    routes = {f"/{name}/{get_task(name).route}" for name in ("image", "tabular", "text", "recommender")} | {"/healthz", "/models"}
    assert {path for path, _ in examples} == routes
    for path, body in examples:
        status, answer = request(base + path, body)
        assert status == 200, (path, answer)


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
    ({"texts": ["ok"] * 257}, "texts"),
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


@pytest.mark.parametrize("route,payload,field", [
    ("/image/predict", {"pixels": [[0.0] * 8] * 8, "pixel_size": 8}, "pixel_size"),
    ("/text/predict", {"text": "fine", "lang": "en"}, "lang"),
    ("/tabular/predict", {**ADULT_RECORDS[0][0], "Age": 25}, "Age"),
    ("/recommender/recommend", {"user_id": 1, "K": 50}, "K"),
])
def test_unknown_fields_answer_422_naming_them(server, route, payload, field):
    base, _ = server
    status, body = request(base + route, payload)
    assert status == 422 and field in json.dumps(body["detail"])


@pytest.mark.parametrize("route,raw,field", [
    ("/image/predict", b'{"pixels": [' + b",".join([b"NaN"] * 64) + b"]}", "pixels"),
    ("/image/predict", b'{"pixels": [' + b",".join([b"Infinity"] * 64) + b"]}", "pixels"),
    ("/image/predict", b'{"pixels": [' + b",".join([b"1e400"] * 64) + b"]}", "pixels"),
    ("/image/predict", b'{"pixels": [' + b",".join([b"1e39"] * 64) + b"]}", "pixels"),
    ("/image/predict", b'{"pixels": [' + b",".join([b"1" + b"0" * 400] * 64) + b"]}", "pixels"),
    ("/recommender/recommend", b'{"genres": {"Comedy": NaN}}', "genres"),
    ("/recommender/recommend", b'{"genres": {"Comedy": 1e400}}', "genres"),
    ("/recommender/recommend", b'{"user_id": 1' + b"0" * 30 + b"}", "user_id"),
    ("/tabular/predict", json.dumps({**ADULT_RECORDS[0][0], "age": 1e40}).encode(), "age"),
    ("/tabular/predict", json.dumps({**ADULT_RECORDS[0][0], "fnlwgt": 10**400}).encode(), "fnlwgt"),
    ("/tabular/predict", json.dumps({**ADULT_RECORDS[0][0], "workclass": {"a": [1]}}).encode(), "workclass"),
])
def test_non_finite_and_huge_numbers_answer_422_naming_the_field(server, route, raw, field):
    base, _ = server
    status, body = post_raw(base + route, raw)
    assert status == 422 and field in json.dumps(body["detail"])


def test_oversized_body_answers_413(server):
    base, _ = server
    status, body = post_raw(base + "/text/predict", json.dumps({"text": "a" * 5_000_000}).encode())
    assert status == 413 and "limit" in body["detail"]
    assert request(base + "/text/predict", {"text": "still here"})[0] == 200


def png_claiming(width: int, height: int) -> str:
    """A valid PNG signature and header that claims width x height pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("size", [(20000, 20000), (5000, 5000)])
def test_png_pixel_count_is_checked_before_decoding(server, size):
    base, _ = server
    status, body = request(base + "/image/predict", {"image_png_base64": png_claiming(*size)})
    assert status == 422 and "image_png_base64" in body["detail"] and "limit" in body["detail"]


def test_text_with_no_known_word_is_flagged_not_guessed(server):
    base, _ = server
    status, body = request(base + "/text/predict", {"texts": ["这部手机很好", "... --- ...", "I love it"]})
    assert status == 200
    unknown, punctuation, known = body["predictions"]
    for p in (unknown, punctuation):
        assert p["known_tokens"] == 0 and p["label"] is None and p["probability"] is None and "vocabulary" in p["note"]
    assert known["known_tokens"] == 3 and known["label"] == "positive"


ROUTES = {"image": "/image/predict", "text": "/text/predict", "tabular": "/tabular/predict", "recommender": "/recommender/recommend"}
LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30) | st.just("x" * 6000))
JSON = st.recursive(LEAVES, lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=4),
                    max_leaves=40)
FIELDS = {"image": ["pixels", "image_png_base64"], "text": ["text", "texts"], "recommender": ["user_id", "genres", "k"],
          "tabular": list(ADULT_RECORDS[0][0])}


def bodies(task: str):
    """Arbitrary JSON and deep nesting, the route's own fields with wild values, and requests that are
    valid in shape with generated values (so that some answer 200)."""
    nested = st.integers(1, 200).map(lambda depth: "[" * depth + "]" * depth)
    if task == "tabular":
        near = st.dictionaries(st.sampled_from(FIELDS[task]), JSON, max_size=3).map(lambda d: {**ADULT_RECORDS[0][0], **d})
    else:
        near = st.dictionaries(st.sampled_from(FIELDS[task] + ["extra"]), JSON, min_size=1, max_size=3)
    number = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**40), 10**40)
    shaped = {
        "image": st.lists(st.lists(st.floats(0, 16) | number, min_size=8, max_size=8), min_size=8, max_size=8).map(lambda p: {"pixels": p}),
        "text": st.text(max_size=300).map(lambda t: {"text": t}) | st.lists(st.text(max_size=80), max_size=5).map(lambda t: {"texts": t}),
        "recommender": st.fixed_dictionaries({"user_id": st.integers(-(10**20), 10**20) | st.integers(1, 700),
                                              "k": st.integers(-5, 200)})
        | st.dictionaries(st.sampled_from(["Comedy", "Drama", "Animation", "Cartoons", ""]), st.floats(-1, 2) | number,
                          max_size=3).map(lambda g: {"genres": g}),
        "tabular": st.fixed_dictionaries({"age": number | st.integers(17, 90), "workclass": JSON})
        .map(lambda d: {**ADULT_RECORDS[1][0], **d}),
    }[task]
    return st.one_of(near, JSON, nested, shaped, shaped)


@pytest.mark.parametrize("task", sorted(ROUTES))
def test_no_generated_body_gets_a_5xx(server, task):
    """A few hundred generated bodies per route: never a 5xx, always a JSON body, and the server keeps answering."""
    base, _ = server
    seen: dict[int, int] = {}
    with httpx.Client(timeout=60) as client:
        @settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(body=bodies(task))
        def check(body):
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()  # NaN/Infinity as JSON5-style literals
            response = client.post(base + ROUTES[task], content=raw, headers={"content-type": "application/json"})
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (raw[:300], response.text[:300])
            response.json()  # always a JSON body

        check()
        example, _ = get_task(task).example_request()
        assert client.post(base + ROUTES[task], json=example).status_code == 200
    print(task, "statuses seen:", dict(sorted(seen.items())))
    assert sum(seen.values()) >= 200 and 200 in seen and 422 in seen


def test_promotion_under_load_drops_no_request(server, image_run, ray_cluster, tmp_path):
    base, _ = server
    old = image_run["metrics"]["run_id"]
    result = run_cli(["run", "image", "--epochs", "2", "--output", str(tmp_path / "second"), "--registry", str(image_run["registry"]),
                      "--no-promote"], ray_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    new = json.loads((tmp_path / "second" / "metrics.json").read_text())["run_id"]
    assert new != old
    pixels = load_digits().images[0].tolist()
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client_loop():
        with httpx.Client(timeout=60) as client:
            for _ in range(3000):  # bounded
                if stop.is_set():
                    return
                response = client.post(base + "/image/predict", json={"pixels": pixels})
                answers.append((response.status_code, response.json().get("run_id")))

    thread = threading.Thread(target=client_loop)
    thread.start()
    try:
        time.sleep(2)
        promoted = run_cli(["registry", "promote", "image", new, "--registry", str(image_run["registry"])])
        assert promoted.returncode == 0, promoted.stderr
        for _ in range(60):  # the replicas look at the pointer every 0.5 s here
            if sum(1 for _, run in answers[-20:] if run == new) == 20:
                break
            time.sleep(1)
    finally:
        stop.set()
        thread.join(timeout=120)
    statuses = {code for code, _ in answers}
    runs = [run for _, run in answers]
    print(f"{len(answers)} requests during promotion; statuses {statuses}")
    assert statuses == {200}
    assert runs[0] == old and runs[-1] == new
    switch = runs.index(new)
    assert set(runs[:switch]) == {old} and set(runs[switch:]) == {new}  # one switch, never back
    health = request(base + "/healthz")[1]
    assert health["tasks"]["image"]["run_id"] == new


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


def test_a_broken_model_answers_503_on_its_routes_while_the_others_serve(image_run, tabular_run, ray_cluster, tmp_path):
    """A registry whose tabular model is corrupt: tabular answers 503 with the reason; image keeps serving."""
    registry = tmp_path / "registry"
    shutil.copytree(image_run["registry"], registry)
    production = json.loads((registry / "tabular" / "production.json").read_text())["run_id"]
    good = registry / "tabular" / "runs" / "repaired"
    shutil.copytree(registry / "tabular" / "runs" / production, good)
    [weights] = (registry / "tabular" / "runs" / production).glob("model.s*")  # safetensors, or skops for a scikit-learn model
    weights.write_bytes(b"\x00" * 64)
    base, proc = start_serve(ray_cluster, registry, ["image", "tabular"], "--reload-interval", "0.5")
    try:
        status, body = request(base + "/tabular/predict", ADULT_RECORDS[0][0])
        assert status == 503 and "did not load" in body["detail"]
        status, body = request(base + "/image/predict", {"pixels": load_digits().images[0].tolist()})
        assert status == 200
        status, health = request(base + "/healthz")
        assert status == 200 and health["status"] == "degraded"
        assert health["tasks"]["image"]["status"] == "ok"
        assert health["tasks"]["tabular"]["status"] == "unavailable" and "did not load" in health["tasks"]["tabular"]["error"]
        # repairing the model (promoting a good copy) brings the route back without a restart
        assert run_cli(["registry", "promote", "tabular", "repaired", "--registry", str(registry)]).returncode == 0
        for _ in range(60):
            if request(base + "/tabular/predict", ADULT_RECORDS[0][0])[0] == 200:
                break
            time.sleep(1)
        else:
            pytest.fail("the repaired tabular model was not picked up")
        assert request(base + "/healthz")[1]["status"] == "ok"
    finally:
        stop_serve(proc)


def test_load_scales_a_task_out_to_more_replicas(image_run, ray_cluster, tmp_path):
    """Autoscaling from the settings: sustained concurrent load on /image/predict adds a second replica."""
    config = tmp_path / "serve.yaml"
    config.write_text("deployment: {min_replicas: 1, max_replicas: 2, target_ongoing_requests: 1, upscale_delay_s: 1, max_batch_size: 1}\n")
    base, proc = start_serve(ray_cluster, image_run["registry"], ["image"], "--serve-config", str(config))
    pixels = load_digits().images[0].tolist()
    stop = threading.Event()
    statuses: list[int] = []

    def client_loop():
        with httpx.Client(timeout=60) as client:
            for _ in range(5000):  # bounded
                if stop.is_set():
                    return
                statuses.append(client.post(base + "/image/predict", json={"pixels": pixels}).status_code)

    clients = [threading.Thread(target=client_loop) for _ in range(8)]
    try:
        for thread in clients:
            thread.start()
        for _ in range(90):
            status = subprocess.run([str(Path(RAY).with_name("serve")), "status", "--address", ray_cluster.dashboard_url],
                                    capture_output=True, text=True, timeout=60)
            replicas = yaml.safe_load(status.stdout)["applications"]["pipeline-image"]["deployments"]["image-model"]["replica_states"]
            if replicas.get("RUNNING", 0) >= 2:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no second replica under load; last replica states: {replicas}")
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
        stop_serve(proc)
    assert statuses and set(statuses) == {200}
