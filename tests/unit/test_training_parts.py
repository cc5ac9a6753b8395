"""The training loop's parts that need no Ray: precision choice, device-side data, phase timing."""

import inspect

import numpy as np
import pytest
import torch

from pipeline.models import unwrap
from pipeline.timing import Stopwatch, Timings
from pipeline.train.loop import RankStreams, ShardData, amp_dtype, make_optimizer, schedule, take_rows, trains_alone, uses_conv2d
from pipeline.train.trainer import TrainOutcome, equal_split_ranges, train_phases, training_span


def test_amp_prefers_bf16_and_fp16_only_when_asked_or_unsupported():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) == torch.bfloat16 and amp_dtype(cpu, "bf16") == torch.bfloat16
    assert amp_dtype(cpu, "fp16") == torch.float16


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_every_optimizer_is_fused_and_steps_on_the_cpu_like_the_per_tensor_one(optimizer):
    from pipeline.tasks import load_config

    tc = load_config("tabular", overrides={"train.optimizer": optimizer, "train.weight_decay": 0.01}).train
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Embedding(50, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    plain_model = torch.nn.Sequential(torch.nn.Embedding(50, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    plain_model.load_state_dict(fused_model.state_dict())
    initial = [p.detach().clone() for p in fused_model.parameters()]
    fused = make_optimizer(fused_model.parameters(), tc)
    assert fused.defaults["fused"] is True
    accepted = inspect.signature(type(fused)).parameters  # the same settings, per-tensor kernels
    plain = type(fused)(plain_model.parameters(), **{k: v for k, v in fused.defaults.items() if k in accepted} | {"fused": None})
    for _ in range(5):
        x, y = torch.randint(0, 50, (8, 3)), torch.randint(0, 2, (8,))
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b, before in zip(fused_model.parameters(), plain_model.parameters(), initial):
        assert not torch.equal(a, before)  # it trained
        assert torch.allclose(a, b, atol=1e-5)  # the same updates up to rounding


def test_equal_split_ranges_give_every_rank_the_same_rows_and_leave_out_fewer_than_world():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, 50), max_size=12), st.integers(1, 5))
    def check(block_rows, world):
        ranges = equal_split_ranges(block_rows, world)
        counts = [sum(stop - start for start, stop in r) for r in ranges]
        assert len(set(counts)) == 1  # every rank runs the same number of steps
        rows = sorted(i for r in ranges for start, stop in r for i in range(start, stop))
        assert len(rows) == len(set(rows)) and all(0 <= i < sum(block_rows) for i in rows)  # no row twice
        assert sum(block_rows) - len(rows) < world

    check()
    assert equal_split_ranges([11], 3) == [[(0, 3)], [(3, 6)], [(6, 9)]]  # one block: contiguous shares


def test_taken_rows_are_a_writable_copy_in_range_order():
    arrays = {"x": np.arange(11 * 2, dtype=np.float32).reshape(11, 2), "y": np.arange(11)}
    taken = take_rows(arrays, [(6, 8), (1, 3)])
    assert taken["y"].tolist() == [6, 7, 1, 2] and taken["x"].shape == (4, 2)
    taken["x"][0, 0] = -1  # a copy: the shared (read-only) arrays are untouched
    assert arrays["x"][6, 0] == 12 and take_rows(arrays, [])["y"].shape == (0,)


class Rows:
    """Stands in for an in-memory shard."""

    def __init__(self, n):
        self.data = {"x": torch.arange(n, dtype=torch.float32)[:, None], "y": torch.arange(n)}


def candidate(name: str, data_parallel: bool = True, datasets=("train_0", "val_1")) -> dict:
    return {"name": name, "config": {"train": {"data_parallel": data_parallel}}, "datasets": dict(zip(("train", "val"), datasets))}


def test_candidates_that_train_alone_pool_when_consecutive_and_only_with_whole_splits_and_several_workers():
    handed = {"train_0": {}, "val_1": {}}
    shared, a, b, c = candidate("shared"), candidate("a", False), candidate("b", False), candidate("c", False)
    parts = schedule([a, shared, b, c, shared], handed, world=2)
    assert [(alone, [x["name"] for x in group]) for alone, group in parts] == [
        (True, ["a"]), (False, ["shared"]), (True, ["b", "c"]), (False, ["shared"])]
    assert trains_alone(a, handed, 2) and not trains_alone(shared, handed, 2)
    assert not trains_alone(a, handed, 1)  # one worker: nothing to train beside it
    assert not trains_alone(a, {"train_0": {}}, 2)  # its val split streams: every worker holds only a shard of it
    assert not trains_alone(a, None, 2)


def test_a_worker_standing_in_for_every_rank_draws_each_ranks_part_from_that_ranks_stream():
    cpu = torch.device("cpu")
    RankStreams(7, 3, [1], cpu)  # one rank: the global generator, seeded as that rank's
    rank1 = torch.rand(4)
    RankStreams(7, 3, [0], cpu)
    rank0 = torch.rand(4)
    streams = RankStreams(7, 3, [0, 1], cpu)
    with streams.of(0):
        first = torch.rand(2)
    with streams.of(1):
        other = torch.rand(4)
    with streams.of(0):
        second = torch.rand(2)
    assert torch.equal(torch.cat([first, second]), rank0) and torch.equal(other, rank1)


def test_cached_shard_batches_are_a_seeded_permutation(monkeypatch):
    data = ShardData(None, torch.device("cpu"), cache=True, shuffle_buffer=0, seed=3)
    monkeypatch.setattr(data, "load", lambda: Rows(10).data)
    epoch0 = [b["y"].tolist() for b in data.batches(0, 4, shuffle=True)]
    again = [b["y"].tolist() for b in data.batches(0, 4, shuffle=True)]
    epoch1 = [b["y"].tolist() for b in data.batches(1, 4, shuffle=True, drop_last=True)]
    assert epoch0 == again and sorted(sum(epoch0, [])) == list(range(10))
    assert [len(b) for b in epoch1] == [4, 4] and epoch1 != epoch0[:2]
    assert [b["y"].tolist() for b in data.batches(0, 4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_unwrap_reaches_the_plain_module_through_compile():
    linear = torch.nn.Linear(2, 2)
    assert unwrap(torch.compile(linear)) is linear and unwrap(linear) is linear
    assert uses_conv2d(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3))) and not uses_conv2d(linear)


def test_fit_time_splits_at_the_first_worker_start_and_the_last_report():
    assert train_phases(100.0, [108.0], 120.0, 121.5) == {"train_startup": 8.0, "training": 12.0, "train_shutdown": 1.5}
    # a resumed run's history holds the earlier run's start: this fit's own start counts
    assert train_phases(100.0, [50.0, 103.0], 110.0, 111.0) == {"train_startup": 3.0, "training": 7.0, "train_shutdown": 1.0}
    assert train_phases(100.0, [], None, 104.0) == {"training": 4.0}


def test_a_tasks_share_of_a_shared_training_run_spans_its_candidates():
    def outcome(start, end):
        return TrainOutcome({}, [], [], [], start, end)

    assert training_span([outcome(105.0, 130.0), outcome(130.5, 150.0)]) == 45.0
    assert training_span([outcome(None, None)]) == 0.0  # an older checkpoint's history: no times


def test_time_spent_away_on_other_runs_is_not_a_runs_own():
    timings = Timings()
    timings.started -= 10.0  # started 10 s ago
    timings.add("training", 3.0)
    timings.away(6.0)
    assert timings.elapsed() == pytest.approx(4.0, abs=0.5)
    table = timings.as_dict()
    assert table["total"] == pytest.approx(4.0, abs=0.5) and table["other"] == pytest.approx(1.0, abs=0.5)


def test_timings_add_up_to_the_total_with_other_for_the_rest():
    timings = Timings()
    lines = []
    watch = Stopwatch(lines.append, "image", timings)
    watch.lap("ingest", "builtin")
    timings.add("training", 2.0)
    timings.add("training", 1.0)
    timings.add("ray_start", 0.5)
    table = timings.as_dict(total=10.0)
    assert list(table)[:3] == ["ray_start", "ingest", "training"]  # summary order, not insertion order
    assert table["training"] == 3.0 and table["total"] == 10.0
    assert sum(v for k, v in table.items() if k != "total") == pytest.approx(10.0, abs=0.02)
    assert lines[0].startswith("[image] ingest: builtin (")
    summary = timings.summary("image run-1", total=10.0)
    assert summary.splitlines()[0] == "timing (image run-1, 10.0s in all)" and "training" in summary and "30%" in summary


def test_epoch_ranking_picks_the_best_epoch_as_ray_trains_checkpoint_ranking_does():
    from pipeline.train.loop import best_epoch, rank_epoch

    def run(values, mode="max", keep=2):
        ranked = []
        for epoch, value in enumerate(values, start=1):
            ranked = rank_epoch(ranked, value, epoch, mode, keep)
            assert any(e == epoch for _, e in ranked)  # the latest is always kept (it is the one to resume from)
            assert len(ranked) <= keep + 1
        return best_epoch(ranked, mode), sorted(e for _, e in ranked)

    assert run([0.5, 0.7, 0.6, 0.65]) == (2, [2, 4])
    assert run([0.9, 0.8, 0.7], mode="min") == (3, [2, 3])
    # A plateau: of equal values the two latest stay ranked and the earlier of them is the best (epoch 13
    # of the image workload's 4..14 at val_accuracy 0.9889, as Ray Train picked it).
    assert run([0.89, 0.96, 0.985] + [0.9889] * 11 + [0.98]) == (13, [13, 14, 15])
    assert run([float("nan"), 0.5, float("nan")]) == (2, [2, 3])
    assert best_epoch([], "max") == 0


def test_image_augmentation_shifts_whole_pixels_rotates_and_is_seeded():
    from pipeline.tasks import get_task, load_config
    from pipeline.tasks.image import shift_rotate

    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0  # one bright pixel per image, away from the border
    torch.manual_seed(0)
    moved = shift_rotate(x, shift=1, degrees=0.0)
    for image in moved[:, 0]:
        (row, col), = torch.nonzero(image > 0.5).tolist()
        assert abs(row - 3) <= 1 and abs(col - 4) <= 1 and image.sum().item() == pytest.approx(1.0, abs=1e-5)  # a whole-pixel move
    assert len({tuple(torch.nonzero(i[0] > 0.5).flatten().tolist()) for i in moved}) > 3  # different moves per image
    torch.manual_seed(0)
    assert torch.equal(shift_rotate(x, 1, 0.0), moved)  # the loop's seed decides the draws
    turned = shift_rotate(torch.rand(4, 3, 12, 10), shift=0, degrees=15.0)
    assert turned.shape == (4, 3, 12, 10) and torch.isfinite(turned).all()

    task = get_task("image")
    batch = {"x": x, "y": torch.zeros(64, dtype=torch.long)}
    off = load_config("image", overrides={"model.augment.shift": 0, "model.augment.rotate": 0})
    assert task.augment(off, batch) is batch
    on = load_config("image", overrides={"model.augment.shift": 1})
    assert task.augment(on, batch)["x"].shape == x.shape and task.augment(on, batch)["y"] is batch["y"]


def test_label_smoothing_spreads_the_target_for_classifiers_and_is_refused_by_the_recommender():
    from pipeline.errors import ConfigError
    from pipeline.tasks import get_task, load_config

    task = get_task("tabular")
    logits = torch.tensor([[4.0, -4.0], [-2.0, 2.0]])
    batch = {"y": torch.tensor([0, 1])}
    plain = task.loss(load_config("tabular", overrides={"train.label_smoothing": 0.0}), logits, batch)
    smoothed = task.loss(load_config("tabular", overrides={"train.label_smoothing": 0.2}), logits, batch)
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, batch["y"]).item())
    # target (0.9, 0.1) for class 0: -0.9 log p0 - 0.1 log p1, averaged over the two rows
    logp = torch.log_softmax(logits, 1)
    expected = -(0.9 * logp[0, 0] + 0.1 * logp[0, 1] + 0.9 * logp[1, 1] + 0.1 * logp[1, 0]) / 2
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-6) and smoothed > plain  # confident logits pay
    assert task.eval_sums(logits, batch)["loss_sum"].item() == pytest.approx(2 * plain.item())  # reported loss stays plain
    with pytest.raises(ConfigError, match="label_smoothing"):
        load_config("recommender", overrides={"train.label_smoothing": 0.1})
    with pytest.raises(ConfigError, match="label_smoothing"):
        load_config("image", overrides={"train.label_smoothing": 1.0})


def test_tensorboard_events_hold_each_epoch_the_final_metrics_and_the_confusion_matrix(tmp_path):
    from pipeline.plots import confusion_matrix_png
    from pipeline.tracking import write_events
    from tests.tensorboard_events import read_events

    history = [{"epoch": e, "lr": 0.1 / e, "base_lr": 0.1, "train_loss": 1.0 / e, "val_accuracy": 0.5 + e / 10,
                "stopped_early": False} for e in (1, 2, 3)]
    png = str(tmp_path / "cm.png")
    confusion_matrix_png(np.array([[5, 1], [2, 7]]), ["a", "b"], png, "test")
    write_events(str(tmp_path / "tb"), history, {"val": {"accuracy": 0.8}, "test": {"accuracy": 0.75, "rows": 15}}, png)
    scalars, images = read_events(tmp_path / "tb")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3] and abs(scalars["lr"][2][1] - 0.1 / 3) < 1e-7
    assert abs(scalars["val/accuracy"][1][1] - 0.7) < 1e-6
    assert scalars["test_final/accuracy"] == [(3, 0.75)] and "test_final/rows" not in scalars  # ints are counts, not metrics
    assert "base_lr" not in scalars and "stopped_early" not in scalars and "epoch" not in scalars
    assert images == {"test_final/confusion_matrix"}


def test_periodic_embeddings_feed_the_mlp_numeric_columns_only_and_train_their_frequencies():
    from pipeline.models.mlp import MLP, PeriodicEmbedding

    torch.manual_seed(0)
    embed = PeriodicEmbedding(n_features=3, frequencies=4, sigma=2.0, dim=5)
    x = torch.randn(7, 3)
    assert embed(x).shape == (7, 3 * 5) and (embed(x) >= 0).all()  # ReLU outputs, one block per feature
    changed = x.clone()
    changed[:, 1] += 1.0
    blocks = (embed(changed) - embed(x)).abs().view(7, 3, 5).sum(-1)
    assert blocks[:, 0].max() == 0 and blocks[:, 2].max() == 0 and blocks[:, 1].max() > 0  # each feature its own block

    model = MLP(in_features=10, n_outputs=2, hidden=[8], dropout=0.0, numeric=3, frequencies=4, sigma=2.0, dim=5)
    assert model.net[0].in_features == 3 * 5 + 7  # embedded numeric columns, then the one-hot columns as they are
    out = model(torch.randn(6, 10))
    out.sum().backward()
    assert out.shape == (6, 2) and model.embed.frequencies.grad.abs().sum() > 0  # the frequencies are trained

    plain = MLP(10, 2, [8], 0.0, numeric=3, frequencies=0)  # off: the reference MLP, loading its saved weights
    assert plain.embed is None and set(plain.state_dict()) == set(MLP(10, 2, [8], 0.0).state_dict())


def test_tabular_mlp_embeds_the_preprocessors_numeric_columns():
    import pandas as pd

    from pipeline.data.features import TableFeatures
    from pipeline.tasks import get_task, load_config

    frame = pd.DataFrame({"age": [30, 40, 50, 60], "hours": [10.0, 20.0, 30.0, 40.0], "job": ["a", "b", "a", "c"],
                          "label": ["x", "y", "x", "y"]})
    features = TableFeatures(["age", "hours"], ["job"], "label", [], "onehot", 1, {})
    features.fit_from_partials([features.partial(frame)])
    cfg = load_config("tabular", overrides={"data.source": "t.csv", "model.periodic.frequencies": 4, "model.periodic.dim": 3})
    model = get_task("tabular").build_model(cfg, features)
    assert model.numeric == 2 and model.net[0].in_features == 2 * 3 + (features.width() - 2)
    logits = model(torch.from_numpy(features.transform(frame)["x"]))
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
