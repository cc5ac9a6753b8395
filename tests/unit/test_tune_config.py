import pytest

from pipeline.errors import ConfigError
from pipeline.tasks import load_config
from pipeline.tune import TuneOptions, apply_params, search_space


def test_random_space_from_config_and_flags():
    from ray.tune.search.sample import Categorical, Float

    cfg = load_config("image")
    space = search_space(cfg, TuneOptions(space={"train.lr": {"loguniform": [0.001, 0.1]}}))
    assert isinstance(space["train.lr"], Float) and space["train.lr"].lower == 0.001
    assert isinstance(space["train.schedule.name"], Categorical)
    assert set(space["train.optimizer"].categories) == {"adam", "adamw", "sgd"}


def test_grid_space_is_the_lr_by_schedule_grid():
    space = search_space(load_config("image"), TuneOptions(search="grid"))
    assert space["train.lr"] == {"grid_search": [0.0003, 0.001, 0.003, 0.01]}
    assert len(space["train.schedule.name"]["grid_search"]) == 4


@pytest.mark.parametrize("opts,message", [
    (TuneOptions(space={"train.schedule.name": {"choice": ["zigzag"]}}), "unknown LR schedule"),
    (TuneOptions(space={"train.lrate": {"loguniform": [0.1, 1]}}), "not a config key"),
    (TuneOptions(space={"train.lr": {"normal": [0, 1]}}), "loguniform"),
])
def test_bad_spaces_are_rejected(opts, message):
    with pytest.raises(ConfigError, match=message):
        search_space(load_config("image"), opts)


@pytest.mark.parametrize("opts,message", [
    (TuneOptions(scheduler="pbt", workers_per_trial=2), "workers-per-trial 1"),
    (TuneOptions(search="bayes", scheduler="pbt"), "PBT"),
    (TuneOptions(search="annealing"), "--search"),
    (TuneOptions(num_samples=0), "at least 1"),
])
def test_option_conflicts(opts, message):
    with pytest.raises(ConfigError, match=message):
        opts.validate()


def test_trial_parameters_apply_to_a_copy_of_the_config():
    cfg = load_config("image")
    out = apply_params(cfg, {"train.lr": 0.05, "train.schedule.name": "cosine", "model.dropout": 0.3})
    assert (out["train"]["lr"], out["train"]["schedule"]["name"], out["model"]["dropout"]) == (0.05, "cosine", 0.3)
    assert cfg.train.lr == 0.001
