"""Serve's parts without a cluster: settings, the HTTP error layer, request schemas, a broken model."""

import json
import math

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.errors import ConfigError
from pipeline.serve.app import make_api
from pipeline.serve.model import ModelServer
from pipeline.serve.settings import load_serve_settings
from pipeline.tasks import get_task, task_names


def test_serve_settings_defaults_flags_and_per_task_overrides(tmp_path):
    defaults = load_serve_settings()
    assert defaults.deployment.max_batch_size > 1 and defaults.deployment.min_replicas >= 1
    user = tmp_path / "serve.yaml"
    user.write_text("deployment: {max_replicas: 6}\ntasks: {image: {num_gpus: 0.25, max_batch_size: 64}}\n")
    s = load_serve_settings(user, {"deployment.max_batch_size": 8, "deployment.num_cpus": None}, base={"reload_interval_s": 30})
    assert s.reload_interval_s == 30 and s.deployment.max_replicas == 6 and s.deployment.max_batch_size == 8
    image, text = s.for_task("image"), s.for_task("text")
    assert (image.num_gpus, image.max_batch_size, text.num_gpus, text.max_batch_size) == (0.25, 64, 0.0, 8)
    options = image.options()
    assert options["ray_actor_options"] == {"num_cpus": defaults.deployment.num_cpus, "num_gpus": 0.25}
    assert options["autoscaling_config"]["max_replicas"] == 6
    assert options["max_queued_requests"] == defaults.deployment.max_queued_requests


@pytest.mark.parametrize("overrides,message", [
    ({"deployment.min_replicas": 3, "deployment.max_replicas": 2}, "deployment.min_replicas: 3 is more than max_replicas"),
    ({"deployment.max_batch_size": 128}, "deployment.max_batch_size: 128 is more than max_ongoing_requests"),
    ({"deployment.max_queued_requests": 0}, "deployment.max_queued_requests: must be positive"),
    ({"deployment.num_gpus": -1}, "deployment.num_gpus"),
    ({"tasks": {"image": {"max_batch": 4}}}, "tasks.image"),
])
def test_bad_serve_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_serve_settings(overrides=overrides)


def test_unknown_serve_setting_is_refused():
    with pytest.raises(ConfigError, match="deployment.max_batch"):
        load_serve_settings(overrides={"deployment.max_batch": 4})


@pytest.fixture(scope="module")
def client():
    api = make_api("test", "test", max_request_bytes=10_000)
    image = get_task("image").request_model

    @api.post("/echo")
    async def echo(body: image):  # noqa: F811 - FastAPI reads the annotation
        return {"ok": True}

    return TestClient(api, raise_server_exceptions=False)


@pytest.mark.parametrize("raw,field", [
    (b'{"pixels": [NaN, 1]}', "pixels"), (b'{"pixels": [Infinity]}', "pixels"), (b'{"pixels": [1e400]}', "pixels"),
    (b'{"pixels": [1e39]}', "pixels"), (b'{"pixels": [1' + b"0" * 400 + b']}', "pixels"), (b'{"pixel": [1]}', "pixel"),
])
def test_non_finite_and_huge_numbers_answer_422_as_json(client, raw, field):
    response = client.post("/echo", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert any(field in err["loc"] for err in response.json()["detail"])


def test_oversized_bodies_answer_413_with_or_without_a_length(client):
    big = json.dumps({"pixels": [1.0] * 5000}).encode()
    assert client.post("/echo", content=big, headers={"content-type": "application/json"}).status_code == 413
    chunked = client.post("/echo", content=iter([big[:6000], big[6000:]]), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "limit of 10,000 bytes" in chunked.json()["detail"]
    assert client.post("/echo", json={"pixels": [1.0] * 64}).status_code == 200


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def request_bodies(task_name: str):
    fields = list(get_task(task_name).request_model.model_fields) + ["k", "extra"]
    return st.dictionaries(st.sampled_from(fields), JSON, max_size=4) | JSON


@pytest.mark.parametrize("task_name", task_names())
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_request_schemas_reject_any_body_with_a_validation_error_only(task_name, data):
    body = data.draw(request_bodies(task_name))
    try:
        request = get_task(task_name).request_model.model_validate(body).model_dump()
    except ValidationError as exc:
        json.dumps([{"loc": [str(p) for p in e["loc"]], "msg": str(e["msg"])} for e in exc.errors()], allow_nan=False)
        return
    if get_task(task_name).request_model.model_config.get("extra") == "forbid":  # tabular's fields are checked later
        for value in request.values():  # what passes holds only finite numbers
            if isinstance(value, float):
                assert math.isfinite(value)


def test_a_model_that_does_not_load_answers_503_with_the_reason(tmp_path):
    run = tmp_path / "image" / "runs" / "broken"
    run.mkdir(parents=True)
    for name in ("model.safetensors", "preprocessor.json", "config.json"):
        (run / name).write_text("not a model")
    (tmp_path / "image" / "production.json").write_text(json.dumps({"run_id": "broken"}))
    server = ModelServer("image", str(tmp_path), refresh_in_background=False)
    status = server.status()
    assert status["status"] == "unavailable" and status["run_id"] is None and "run broken did not load" in status["error"]
    [(code, detail)] = server.answer_many([{"pixels": [[0.0] * 8] * 8, "image_png_base64": None}])
    assert code == 503 and "run broken did not load" in detail
    server.check()  # no model: the replica itself is healthy and answers 503
    (tmp_path / "image" / "production.json").write_text("{ not json")
    server.refresh()
    assert "cannot read the registry's production pointer" in server.status()["error"]


def test_serve_and_deploy_flags_reach_the_settings(tmp_path):
    from pipeline.cli import DEPLOY_PRESET, build_parser, serve_settings

    args = build_parser().parse_args(["serve", "--max-batch-size", "1", "--replica-gpus", "0.5", "--max-replicas", "3",
                                      "--reload-interval", "2"])
    s = serve_settings(args)
    assert (s.deployment.max_batch_size, s.deployment.num_gpus, s.deployment.max_replicas, s.reload_interval_s) == (1, 0.5, 3, 2)
    assert s.deployment.num_cpus == load_serve_settings().deployment.num_cpus  # untouched flags keep serve.yaml's value
    user = tmp_path / "serve.yaml"
    user.write_text("deployment: {max_replicas: 8}\n")
    deployed = serve_settings(build_parser().parse_args(["deploy", "--serve-config", str(user), "--min-replicas", "2"]), DEPLOY_PRESET)
    assert (deployed.deployment.num_cpus, deployed.reload_interval_s) == (1.0, 30.0)  # the cluster preset
    assert (deployed.deployment.max_replicas, deployed.deployment.min_replicas) == (8, 2)  # file, then flags


def test_batch_predict_concurrency_flag():
    from pipeline.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["batch-predict", "image", "--input", "x", "--output", "y", "--concurrency", "2,6"]).concurrency == (2, 6)
    assert parse(["batch-predict", "image", "--input", "x", "--output", "y", "--concurrency", "3"]).concurrency == (3, 3)
    for bad in ("0,2", "4,2", "a,b", "1,2,3"):
        with pytest.raises(SystemExit):
            parse(["batch-predict", "image", "--input", "x", "--output", "y", "--concurrency", bad])
