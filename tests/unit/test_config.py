import pytest

from pipeline.config import parse_override
from pipeline.errors import ConfigError
from pipeline.tasks import load_config


def test_image_defaults_follow_the_reference_design():
    cfg = load_config("image")
    assert cfg.seed == 42
    assert cfg.data.split.ratios == [0.7, 0.15, 0.15]
    assert cfg.data.split.method == "stratified"
    # The reference's layers (Conv 32 -> pool -> Conv 64 -> pool -> Conv 64 -> Dense 64) at twice the width,
    # with label smoothing: chosen by cross-validation on train + val (benchmarks/image_cv.py)
    assert cfg.model.channels == [2 * 32, 2 * 64, 2 * 64] and cfg.model.dense == 2 * 64
    assert cfg.train.label_smoothing == 0.1
    assert cfg.train.schedule.name == "exp_decay" and cfg.train.schedule.decay_start == 10
    assert cfg.train.num_workers == 2


def test_overrides_and_files_merge_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\n  schedule:\n    name: cosine\n")
    cfg = load_config("image", path, {"train.epochs": 3, "seed": 7})
    assert (cfg.train.lr, cfg.train.schedule.name, cfg.train.epochs, cfg.seed) == (0.01, "cosine", 3, 7)
    assert cfg.train.batch_size == 32  # untouched default


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("image", overrides={"train.lr": 0.02})
    path = tmp_path / "best.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config("image", path).to_dict() == cfg.to_dict()


def test_unknown_task_and_missing_file():
    with pytest.raises(ConfigError, match="unknown task"):
        load_config("audio")
    with pytest.raises(ConfigError, match="not found"):
        load_config("image", "/no/such/file.yaml")


def test_file_for_another_task_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: text\n")
    with pytest.raises(ConfigError, match="for task 'text'"):
        load_config("image", path)


def test_parse_override_reads_yaml_values():
    assert parse_override("train.lr=1e-3") == ("train.lr", "1e-3")  # coerced to float at load
    assert load_config("image", overrides=dict([parse_override("train.lr=1e-3")])).train.lr == 1e-3
    assert parse_override("data.split.ratios=[0.8, 0.1, 0.1]") == ("data.split.ratios", [0.8, 0.1, 0.1])
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")


def test_a_user_table_description_replaces_the_default_one(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  schema: {a: int, b: category}\n  clean: {a: {required: true}}\n"
                    "  labeling: {}\nfeatures: {numeric: [a], categorical: [b], log1p: []}\n")
    cfg = load_config("tabular", path)
    assert cfg.data.columns == {"a": "int", "b": "category"}
    assert list(cfg.data.clean) == ["a"] and cfg.data.clean["a"].required is True
    assert cfg.features.encoding == "onehot"  # other sections still merge key by key


@pytest.mark.parametrize("task,override,message", [
    ("image", {"train.lrr": 0.1}, "train.lrr: unknown key (did you mean lr?)"),
    ("image", {"train.epochs": "ten"}, "train.epochs: input should be a valid integer"),
    ("image", {"train.optimizer": "rmsprop"}, "train.optimizer: input should be 'adam', 'adamw' or 'sgd'"),
    ("image", {"data.split.ratios": [0.5, 0.5, 0.5]}, "data.split.ratios: give three non-negative numbers summing to 1"),
    ("image", {"data.split.method": "grouped"}, "data.split.group: split method 'grouped' needs this column"),
    ("image", {"model.dropuot": 0.1}, "model.dropuot: unknown key (did you mean dropout?)"),
    ("text", {"features.max_tokns": 3}, "features.max_tokns: unknown key (did you mean max_tokens?)"),
    ("image", {"tune.space.train.lrr": {"loguniform": [0.001, 0.1]}}, "tune.space.train.lrr: not a config key (did you mean train.lr?)"),
    ("image", {"data.options.shap": 1}, "data.options.shap: unknown key (did you mean shape?)"),
    ("image", {"train.lr": "fast"}, "train.lr: input should be a valid number"),
    ("recommender", {"model.objective": "clicks"}, "model.objective: input should be 'ranking' or 'rating'"),
    ("text", {"candidates.models.mean_embedding.model.embed_dm": 8}, "candidates.models.mean_embedding: model.embed_dm: unknown key"),
    ("text", {"candidates.select": "cnn"}, "candidates.select: 'cnn' is neither best_val nor a candidate"),
])
def test_a_typo_in_any_section_is_an_error_naming_the_key(task, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(task, overrides=override)
    assert str(err.value).startswith(message)


def test_a_typo_in_a_user_file_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  dropuot: 0.1\ntrain:\n  lr: fast\n")
    with pytest.raises(ConfigError, match="model.dropuot: unknown key.*; train.lr: input should be a valid number"):
        load_config("image", path)


def test_setting_a_section_changes_only_the_keys_given_and_a_mapping_is_replaced():
    cfg = load_config("tabular", overrides={"tune.pbt": {"synch": True}, "tune.grid": {"train.lr": [0.1]}})
    assert cfg.tune.pbt.synch is True and cfg.tune.pbt.perturbation_interval == 2  # the section merges
    assert cfg.tune.grid == {"train.lr": [0.1]}  # a free mapping is replaced


def test_candidates_are_configs_of_their_own():
    cfg = load_config("text", overrides={"candidates.models.mean_embedding.train": {"lr": 0.02}})
    candidates = dict(cfg.candidate_configs())
    assert list(candidates) == ["bilstm_attention", "mean_embedding", "nb_ngram", "tfidf_logreg"]
    assert candidates["mean_embedding"].model.arch == "mean_embedding" and candidates["mean_embedding"].train.lr == 0.02
    assert candidates["bilstm_attention"].model.arch == "bilstm_attention" and candidates["bilstm_attention"].train.lr == 0.005
    assert candidates["mean_embedding"].candidates.models == {}  # a candidate is one model


def test_every_task_yaml_sets_only_known_keys_and_no_shared_default_twice():
    import yaml

    from pipeline.tasks import DEFAULTS, defaults_file, task_names

    shared = yaml.safe_load(DEFAULTS.read_text())

    def repeated(own, base, path=()):
        for key, value in own.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict) and base.get(key):
                yield from repeated(value, base[key], path + (key,))
            elif key in base and base[key] == value and value not in ({}, []):
                yield ".".join(path + (key,))

    for name in task_names():
        load_config(name)
        own = yaml.safe_load(defaults_file(name).read_text())
        assert not list(repeated(own, shared)), f"{name}.yaml repeats defaults.yaml"


def test_a_plugin_task_is_found_through_the_environment(monkeypatch):
    from pipeline.tasks import get_task, task_names

    assert "toy" not in task_names()
    monkeypatch.setenv("PIPELINE_TASKS", "tests.workloads.toy")
    assert task_names()[-1] == "toy" and get_task("toy").name == "toy"
    cfg = load_config("toy", overrides={"train.epochs": 2})
    assert cfg.features.numeric == ["x", "y"] and cfg.train.epochs == 2
    with pytest.raises(ConfigError, match="model.hiden: unknown key"):
        load_config("toy", overrides={"model.hiden": [4]})
    monkeypatch.setenv("PIPELINE_TASKS", "tests.workloads.nothing_here")
    with pytest.raises(ConfigError, match="cannot import tests.workloads.nothing_here"):
        get_task("nothing_here")
