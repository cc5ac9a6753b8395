import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from pipeline.data.clean import first_reason
from pipeline.models.cnn import CNN
from pipeline.tasks.base import RequestError
from pipeline.tasks import load_config
from pipeline.tasks.image import ImagePreprocessor, ImageRequest, ImageTask, content_ids, rows_from_arrays

CLASSES = [str(i) for i in range(10)]


def batch_with_bad_rows():
    images = np.empty(5, dtype=object)
    for i in range(5):
        images[i] = np.ones((8, 8), np.float32)
    images[1] = np.ones((7, 8), np.float32)
    images[2][0, 0] = np.nan
    labels = np.array(["3", "4", "5", "11", ""])
    return {"image": images, "label": labels}


def test_checks_name_the_first_problem_per_row():
    cfg = load_config("image", overrides={"data.options.shape": [8, 8], "data.options.classes": CLASSES})
    batch = batch_with_bad_rows()
    reasons = first_reason([check(batch)[1] for check in ImageTask().checks(cfg)], 5)
    assert reasons.tolist() == ["", "wrong_shape", "nan_pixels", "unknown_label", "missing_label"]


def test_rows_from_npz_style_arrays_get_stable_ids():
    images = np.arange(2 * 64, dtype=np.float32).reshape(2, 8, 8)
    rows = rows_from_arrays({"images": images, "labels": np.array([1, 2])})
    assert rows["label"].tolist() == ["1", "2"]
    assert rows["id"].tolist() == content_ids(images, np.array(["1", "2"])).tolist()
    with pytest.raises(Exception, match="label column"):
        rows_from_arrays({"images": images})
    assert rows_from_arrays({"images": images}, labelled=False)["label"].tolist() == ["", ""]


def test_preprocessor_transform_and_json_state():
    prep = ImagePreprocessor([8, 8], CLASSES, 16.0, mean=4.0, std=2.0)
    out = prep.transform({"image": np.full((3, 8, 8), 6.0, np.float32), "label": np.array(["0", "9", "3"])})
    assert out["x"].shape == (3, 1, 8, 8) and out["x"].dtype == np.float32
    assert np.allclose(out["x"], 1.0)
    assert out["y"].tolist() == [0, 9, 3]
    again = ImagePreprocessor.from_state(prep.state())
    assert again.state() == prep.state()
    with pytest.raises(ValueError, match="not among the classes"):
        prep.transform({"image": np.zeros((1, 8, 8), np.float32), "label": np.array(["x"])})


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_cnn_adapts_to_the_input_size(shape):
    model = CNN(shape, 10, [32, 64, 64], 64, 0.2, True)
    assert model(torch.zeros(4, *shape)).shape == (4, 10)


def test_request_validation_names_the_field():
    with pytest.raises(ValidationError, match="pixels"):
        ImageRequest(pixels=[["a"] * 8] * 8)
    with pytest.raises(ValidationError, match="finite"):
        ImageRequest(pixels=[float("nan")] * 64)
    with pytest.raises(ValidationError, match="exactly one"):
        ImageRequest()
    prep = ImagePreprocessor([8, 8], CLASSES, 16.0, 0.0, 1.0)
    task = ImageTask()
    with pytest.raises(RequestError, match="expected shape 8x8"):
        task.request_to_batch({"pixels": [[1.0] * 7] * 8, "image_png_base64": None}, prep)
    flat = task.request_to_batch({"pixels": list(range(64)), "image_png_base64": None}, prep)
    assert flat["image"].shape == (1, 8, 8)
    with pytest.raises(RequestError, match="image_png_base64"):
        task.request_to_batch({"pixels": None, "image_png_base64": "bm90IGEgcG5n"}, prep)


def test_png_request_is_rescaled_to_the_training_range():
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(buf, format="PNG")
    prep = ImagePreprocessor([8, 8], CLASSES, 16.0, 0.0, 1.0)
    batch = ImageTask().request_to_batch({"pixels": None, "image_png_base64": base64.b64encode(buf.getvalue()).decode()}, prep)
    assert batch["image"].shape == (1, 8, 8)
    assert np.allclose(batch["image"], 16.0)


def test_embedded_digits_read_without_scikit_learn_match_its_loader():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from pipeline.datasets.digits import load_digits_arrays

    arrays, digits = load_digits_arrays(), load_digits()
    assert arrays["image"].dtype == np.float32 and np.array_equal(arrays["image"], digits.images)
    assert arrays["label"].tolist() == digits.target.astype(str).tolist()
    assert arrays["id"][0] == "digits-0000" and len(set(arrays["id"])) == len(digits.target)
    # The image task's example request (a Serve replica's health check) needs no scikit-learn import.
    code = ("import sys; from pipeline.tasks.image import ImageTask; ImageTask().example_request(); "
            "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
