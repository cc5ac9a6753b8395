import math

import pytest

from pipeline.errors import ConfigError
from pipeline.tasks import load_config
from pipeline.train.schedules import SCHEDULES, lr_factor


def schedule(name: str, **settings):
    """The shared default schedule settings (defaults.yaml) with `name` and `settings` changed."""
    return load_config("image").train.schedule.model_copy(update={"name": name, **settings})


def test_exp_decay_is_the_reference_schedule():
    cfg = schedule("exp_decay", decay_start=10, decay_rate=0.1)
    for epoch in range(100):
        expected = 0.01 if epoch < 10 else 0.01 * math.exp(0.1 * (10 - epoch))
        assert 0.01 * lr_factor(cfg, epoch + 0.5, 100) == pytest.approx(expected)


def test_step_cosine_and_warmup_shapes():
    assert lr_factor(schedule("step", step_size=5, gamma=0.5), 11, 20) == 0.25
    cos = schedule("cosine")
    assert lr_factor(cos, 0, 10) == 1.0 and lr_factor(cos, 10, 10) == pytest.approx(0.0)
    warm = schedule("warmup_cosine", warmup_epochs=2)
    assert lr_factor(warm, 1, 10) == pytest.approx(0.5)
    assert lr_factor(warm, 2, 10) == pytest.approx(1.0)
    one = schedule("one_cycle", warmup_epochs=3)
    assert lr_factor(one, 0, 10) == pytest.approx(0.04) and lr_factor(one, 3, 10) == pytest.approx(1.0)
    assert lr_factor(one, 10, 10) < 0.01


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_stays_positive_and_bounded(name):
    cfg = schedule(name)
    values = [lr_factor(cfg, e / 4, 20) for e in range(81)]
    assert all(0 <= v <= 1.0 + 1e-9 for v in values)


def test_unknown_schedule():
    with pytest.raises(ConfigError, match="train.schedule.name: input should be"):
        load_config("image", overrides={"train.schedule.name": "zigzag"})
    with pytest.raises(ConfigError, match="unknown LR schedule"):
        lr_factor(schedule("zigzag"), 1, 10)
