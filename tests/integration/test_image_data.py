"""Ray Data stages on the image task, on the session's shared Ray."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data.clean import clean_dataset
from pipeline.data.split import split_dataset
from pipeline.flow import prepare_data
from pipeline.tasks import get_task, load_config

pytestmark = pytest.mark.usefixtures("ray_session")


def digits_ds(blocks: int):
    cfg = load_config("image")
    return get_task("image").read(cfg).repartition(blocks), cfg


def split_ids(splits):
    return {name: set(ds.select_columns(["id"]).to_pandas()["id"]) for name, ds in splits.items()}


def test_split_is_deterministic_whatever_the_block_count():
    ds1, cfg = digits_ds(1)
    ds7, _ = digits_ds(7)
    a = split_ids(split_dataset(ds1, cfg.data.split, 42))
    b = split_ids(split_dataset(ds7, cfg.data.split, 42))
    assert a == b
    assert not (a["train"] & a["val"]) and not (a["train"] & a["test"]) and not (a["val"] & a["test"])
    assert sum(len(v) for v in a.values()) == 1797
    c = split_ids(split_dataset(ds1, cfg.data.split, 7))
    assert c["test"] != a["test"]  # the seed matters


def test_stratified_split_keeps_class_proportions():
    ds, cfg = digits_ds(3)
    splits = split_dataset(ds, cfg.data.split, 42)
    full = ds.select_columns(["label"]).to_pandas()["label"].value_counts()
    test = splits["test"].select_columns(["label"]).to_pandas()["label"].value_counts()
    for label, n in full.items():
        assert abs(test[label] - 0.15 * n) <= 1


def test_random_split_method():
    ds, cfg = digits_ds(2)
    splits = split_dataset(ds, cfg.data.split.model_copy(update={"method": "random", "stratify": None}), 42)
    sizes = {k: v.count() for k, v in splits.items()}
    assert sum(sizes.values()) == 1797 and abs(sizes["train"] / 1797 - 0.7) < 0.05


def test_clean_quarantines_bad_rows_with_reasons_and_counts_reconcile(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 16, (20, 8, 8)).astype(np.float32)
    images[3, 2, 2] = np.nan
    labels = np.array([str(i % 10) for i in range(20)])
    labels[5] = "cat"
    np.savez(tmp_path / "digits.npz", images=images, labels=labels)
    cfg = load_config("image", overrides={"data.source": str(tmp_path / "digits.npz"),
                                          "data.options.classes": [str(i) for i in range(10)]})
    task = get_task("image")
    ds = task.read(cfg)  # fills the options left to the data (shape)
    result = clean_dataset(ds, task.checks(cfg), task.batch_format)
    assert result.rows_in == result.rows_kept + result.rows_quarantined == 20
    assert result.reasons == {"nan_pixels": 1, "unknown_label": 1}
    quarantined = result.quarantined.to_pandas()
    assert sorted(quarantined["reason"]) == ["nan_pixels", "unknown_label"]


def test_image_folder_with_a_wrong_size_file(tmp_path):
    rng = np.random.default_rng(1)
    for label in ("circle", "square"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(tmp_path / "imgs" / label / f"{i}.png")
    Image.fromarray(np.zeros((6, 9), np.uint8)).save(tmp_path / "imgs" / "square" / "odd.png")
    cfg = load_config("image", overrides={"data.source": str(tmp_path / "imgs")})
    prepared = prepare_data(get_task("image"), cfg, str(tmp_path / "out"), log=lambda _: None)
    assert cfg.data.options.shape == [10, 10] and cfg.data.options.classes == ["circle", "square"]
    assert prepared.report["rows_in"] == 25 and prepared.report["rows_quarantined"] == 1
    assert prepared.report["quarantined_by_reason"] == {"wrong_shape": 1}
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine")
    assert quarantine["id"].tolist() == ["square/odd.png"] and quarantine["reason"].tolist() == ["wrong_shape"]
    assert (tmp_path / "out" / "data_report.json").exists()


def test_features_are_fitted_on_train_only():
    ds, cfg = digits_ds(2)
    splits = split_dataset(ds, cfg.data.split, 42)
    task = get_task("image")
    prep = task.fit_preprocessor(cfg, splits)
    train_pixels = np.stack(splits["train"].to_pandas()["image"].to_numpy()).astype(np.float64)
    all_pixels = np.stack(ds.to_pandas()["image"].to_numpy()).astype(np.float64)
    assert prep.mean == pytest.approx(train_pixels.mean(), rel=1e-9)
    assert prep.std == pytest.approx(train_pixels.std(), rel=1e-6)
    assert prep.mean != pytest.approx(all_pixels.mean(), rel=1e-6)


def test_missing_input_is_one_clear_error(tmp_path):
    from pipeline.errors import DataError

    cfg = load_config("image", overrides={"data.source": str(tmp_path / "nope")})
    with pytest.raises(DataError, match="input not found: .*nope"):
        get_task("image").read(cfg)
