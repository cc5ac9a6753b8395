import pytest

from pipeline.config import load_config, parse_override
from pipeline.errors import ConfigError


def test_image_defaults_follow_the_reference_design():
    cfg = load_config("image")
    assert cfg.seed == 42
    assert cfg.data.split.ratios == [0.7, 0.15, 0.15]
    assert cfg.data.split.method == "stratified"
    assert cfg.model["channels"] == [32, 64, 64] and cfg.model["dense"] == 64
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


@pytest.mark.parametrize("override,message", [
    ({"train.lrr": 0.1}, "train.lrr"),
    ({"train.epochs": "ten"}, "train.epochs must be int"),
    ({"train.optimizer": "rmsprop"}, "train.optimizer"),
    ({"data.split.ratios": [0.5, 0.5, 0.5]}, "ratios"),
    ({"data.split.method": "grouped"}, "data.split.group"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("image", overrides=override)


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
    assert cfg.data.schema == {"a": "int", "b": "category"}
    assert cfg.data.clean == {"a": {"required": True}}
    assert cfg.features["encoding"] == "onehot"  # other sections still merge key by key
