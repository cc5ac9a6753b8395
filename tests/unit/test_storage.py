"""The storage layer on local paths (S3 runs in tests/e2e/test_multi_node.py), and the cluster checks that
decide whether a local path may be used, with Ray's node list stubbed."""

import pytest

from pipeline import storage
from pipeline.errors import ConfigError, StorageError


def test_round_trips_and_listing(tmp_path):
    root = str(tmp_path / "out")
    storage.write_json(storage.join(root, "a", "metrics.json"), {"x": 1})
    storage.write_text(storage.join(root, "b.txt"), "hello")
    assert storage.read_json(storage.join(root, "a", "metrics.json")) == {"x": 1}
    assert storage.list_files(root) == ["a/metrics.json", "b.txt"]
    assert storage.list_dirs(root) == ["a"]
    storage.copy_dir(root, str(tmp_path / "copy"))
    storage.copy_dir(storage.join(root, "a"), str(tmp_path / "copy"))  # replaces, does not merge
    assert storage.list_files(str(tmp_path / "copy")) == ["metrics.json"]
    storage.delete_dir(root)
    assert not storage.exists(root) and storage.list_files(root) == []


def test_writes_leave_no_temporary_files(tmp_path):
    storage.write_bytes(str(tmp_path / "model.bin"), b"\x00" * 10)
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


@pytest.mark.parametrize("uri, shown", [
    ("s3://AKIAXYZ:wJalr%2FsecretKEY@bucket/data.csv", "s3://***@bucket/data.csv"),
    ("s3://bucket/x?endpoint_override=h:9000&secret_key=abc&access_key=AK&session_token=t", "s3://bucket/x?endpoint_override=h:9000&secret_key=***&access_key=***&session_token=***"),
    ("gs://user@bucket/x", "gs://***@bucket/x"),
    ("/data/plain/path.csv", "/data/plain/path.csv"),
    ("s3://bucket/plain/path.csv", "s3://bucket/plain/path.csv"),
])
def test_credentials_are_redacted(uri, shown, tmp_path):
    assert storage.redact(uri) == shown
    assert storage.redact(f"cannot read {uri} (no such key)") == f"cannot read {shown} (no such key)"
    storage.write_json(str(tmp_path / "metrics.json"), {"data": {"source": uri}, "output_dir": uri})
    written = (tmp_path / "metrics.json").read_text()
    assert shown in written and (uri == shown or uri not in written)


def test_a_storage_error_does_not_show_credentials():
    with pytest.raises(StorageError) as caught:
        storage.read_bytes("s3://KEY:TOPSECRET@no-such-bucket-here/x?endpoint_override=127.0.0.1:1&scheme=http")
    assert "TOPSECRET" not in str(caught.value)


def test_paths_and_uris_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("runs/x") == str(tmp_path / "runs" / "x")
    assert storage.resolve("file://" + str(tmp_path)) == str(tmp_path)
    assert storage.resolve("s3://bucket/runs/x/") == "s3://bucket/runs/x"
    assert storage.join("s3://bucket/runs", "x", "model") == "s3://bucket/runs/x/model"
    assert storage.is_remote("gs://b/x") and not storage.is_remote("/tmp/x") and not storage.is_remote("file:///tmp/x")


def test_errors_name_the_location(tmp_path):
    with pytest.raises(StorageError, match="missing.json"):
        storage.read_json(str(tmp_path / "missing.json"))
    with pytest.raises(StorageError, match="nope://x"):
        storage.exists("nope://x")


def nodes(*resources: dict, here: int = 0):
    return [{"NodeID": f"n{i}", "Alive": True, "Resources": r} for i, r in enumerate(resources)], f"n{here}"


@pytest.fixture
def cluster(monkeypatch):
    """Sets what ray.nodes() and the current node id report."""
    import ray

    def set_nodes(listed):
        node_list, here = listed
        monkeypatch.setattr(ray, "nodes", lambda: node_list)
        monkeypatch.setattr(ray, "get_runtime_context", lambda: type("Ctx", (), {"get_node_id": lambda self: here})())

    return set_nodes


def test_local_paths_are_refused_on_several_nodes(cluster):
    from pipeline.runtime import require_shared_storage

    cluster(nodes({"CPU": 4}, {"CPU": 4}))
    with pytest.raises(ConfigError, match=r"--output /tmp/out: local path on a Ray cluster of several nodes.*--shared-storage"):
        require_shared_storage({"--output": "/tmp/out", "--registry": "s3://b/registry"})
    require_shared_storage({"--output": "s3://b/out", "--registry": "gs://b/registry", "--storage": None})
    require_shared_storage({"--output": "/mnt/nfs/out"}, declared_shared=True)


def test_a_head_without_cpus_counts_as_a_cluster(cluster):
    from pipeline.runtime import cluster_is_multi_node

    cluster(nodes({"CPU": 8}))
    assert not cluster_is_multi_node()
    cluster(nodes({"CPU": 0, "memory": 1}))  # KubeRay head with num-cpus 0: work goes to nodes yet to come
    assert cluster_is_multi_node()


def test_workers_that_cannot_be_placed_are_reported(cluster):
    from pipeline.runtime import resources_note

    cluster(nodes({"CPU": 0}, {"CPU": 3, "GPU": 1}, {"CPU": 3, "GPU": 1}))
    assert resources_note(2, 2, 1) is None
    assert resources_note(2, 2, 0) is None
    assert "3 training worker(s) of 2 CPU and 1 GPU" in resources_note(3, 2, 1)
    assert "2 GPUs on 3 node(s)" in resources_note(2, 4, 0)  # 4 CPUs fit no single node


def test_the_driver_drops_only_rays_known_noise_from_forwarded_worker_lines():
    from ray._private import ray_logging

    from pipeline.runtime import hide_known_ray_noise

    hide_known_ray_noise()
    hide_known_ray_noise()  # once is enough: a second call changes nothing
    lines = ["\u2714\ufe0f  Dataset train_0_035AjWJ5_0 execution finished in 2.86 seconds",
             "Progress bars disabled. To enable, set `ray.data.DataContext.get_current().enable_progress_bars = True`.",
             "[2026-12-07 20:08:01,343 E 21379 21409] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and ID: "
             "'60ed' has constructor arguments in the object store and max_restarts > 0. If the arguments ...",
             "[tabular/mlp] epoch 1/1  train_loss=0.367  val_accuracy=0.9052",
             "Dataset execution failed: disk full"]
    kept = ray_logging.stderr_deduplicator.deduplicate({"ip": "127.0.0.1", "pid": 1, "is_err": True, "lines": lines})
    assert [line for batch in kept for line in batch["lines"]] == lines[3:]
