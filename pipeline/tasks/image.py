"""Image classification: a CNN over grey-scale or RGB images (default: the bundled 8x8 digits).

Raw rows are {"id": str, "image": HxW or HxWxC array, "label": class name}. Sources: the embedded
digits, an image folder `root/<class>/*.png`, or Parquet / .npz files with `image` and `label`.
"""

from __future__ import annotations

import base64
import io
import posixpath
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from pipeline.config import DataConfig, PipelineConfig, Section
from pipeline.data.features import LabelEncoder, Preprocessor, fit_partials, merge_moments, moments
from pipeline.errors import DataError
from pipeline.models.cnn import CNN
from pipeline.tasks.base import RequestError, fits_float32
from pipeline.tasks.classification import ClassificationTask

MAX_PNG_PIXELS = 4096 * 4096  # a PNG request's largest image, checked before decoding


class ImageOptions(Section):
    """How to read images; what is left null is inferred from the data."""

    shape: list[PositiveInt] | None = None  # [H, W] or [H, W, C]; null: the most common shape
    classes: list[str] | None = None  # null: every label seen, sorted
    pixel_max: PositiveFloat | None = None  # the value of white, to rescale PNG requests; null: 255
    mode: Literal["L", "RGB"] = "L"  # grey or colour, when reading image files


class ImageData(DataConfig):
    options: ImageOptions


class AugmentSettings(Section):
    """Training images changed at random each time they are seen (0 and 0: off)."""

    shift: NonNegativeInt = 0  # pixels: each image moved by a whole number of pixels up to this, each way
    rotate: NonNegativeFloat = 0.0  # degrees: each image rotated by up to this, either way


class CNNSettings(Section):
    channels: list[PositiveInt]  # one 3x3 conv block each, max-pooled between blocks
    dense: PositiveInt  # width of the hidden dense layer
    dropout: NonNegativeFloat  # before the output layer
    batchnorm: bool  # after each convolution
    augment: AugmentSettings = AugmentSettings()


class NoFeatures(Section):
    """Pixels are standardised with statistics of the training split; nothing to configure."""


class ImageConfig(PipelineConfig):
    data: ImageData
    features: NoFeatures  # none: pixels are standardised with the training split's statistics
    model: CNNSettings


class ImageRequest(BaseModel):
    """One image: `pixels` as rows of numbers (or one flat list), or a base64-encoded PNG."""

    model_config = ConfigDict(extra="forbid")

    pixels: list[Any] | None = Field(None, description="rows of pixel values (HxW), or one flat list of H*W values")
    image_png_base64: str | None = Field(None, description="a PNG file, base64-encoded; resized to the model's input")

    @field_validator("pixels")
    @classmethod
    def numeric_pixels(cls, value):
        if value is None:
            return value
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float64
            raise ValueError("pixels must be a list of numbers or a list of equally long rows of numbers") from None
        if not fits_float32(array):
            raise ValueError("pixels must be finite numbers within float32 range (no NaN, infinity or |x| > 3.4e38)")
        return array.tolist()

    @model_validator(mode="after")
    def exactly_one(self):
        if (self.pixels is None) == (self.image_png_base64 is None):
            raise ValueError("give exactly one of `pixels` or `image_png_base64`")
        return self


# --- reading ---------------------------------------------------------------------------------

def rows_from_arrays(batch: dict[str, np.ndarray], labelled: bool = True) -> dict[str, np.ndarray]:
    """Normalises any source's batch to {"id", "image", "label"} ("" labels when `labelled` is False)."""
    if "path" in batch:  # an image folder: the label is the parent directory's name
        paths = np.asarray(batch["path"]).astype(str)
        labels = np.array([posixpath.basename(posixpath.dirname(p)) for p in paths])
        ids = np.array(["/".join(p.split("/")[-2:]) for p in paths])
        return {"id": ids, "image": to_float_images(batch["image"]), "label": labels}
    image_key = next((k for k in ("image", "images", "x", "data") if k in batch), None)
    label_key = next((k for k in ("label", "labels", "y", "target") if k in batch), None)
    if image_key is None or (label_key is None and labelled):
        raise DataError(f"image data needs an image column and a label column; found {sorted(batch)}")
    images = to_float_images(batch[image_key])
    if label_key is None:
        labels = np.full(len(images), "", dtype=object)
    else:
        labels = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in np.asarray(batch[label_key])])
    ids = np.asarray(batch["id"]).astype(str) if "id" in batch else content_ids(images, labels)
    return {"id": ids, "image": images, "label": labels}


def to_float_images(images) -> np.ndarray:
    if isinstance(images, np.ndarray) and images.dtype != object:
        return images.astype(np.float32)
    out = np.empty(len(images), dtype=object)  # ragged: shapes differ between rows
    for i, img in enumerate(images):
        out[i] = np.asarray(img, dtype=np.float32)
    return out


def content_ids(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A stable id from pixel bytes and label, for sources without an id column."""
    if images.dtype != object:
        frame = pd.DataFrame(images.reshape(len(images), -1))
    else:
        frame = pd.DataFrame({"bytes": [np.asarray(img).tobytes() for img in images]})
    frame["label"] = labels
    return np.array([f"{h:016x}" for h in pd.util.hash_pandas_object(frame, index=False).to_numpy()])


def image_shapes(images) -> list[tuple]:
    if images.dtype != object:
        return [tuple(images.shape[1:])] * len(images)
    return [tuple(np.shape(img)) for img in images]


# --- cleaning checks -------------------------------------------------------------------------

def shape_check(shape: tuple):
    def check(batch):
        return batch, np.array(["" if s == shape else "wrong_shape" for s in image_shapes(batch["image"])], dtype=object)
    return check


def nan_check(batch):
    images = batch["image"]
    if images.dtype != object:
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    else:
        bad = np.array([not np.isfinite(np.asarray(img, dtype=np.float64)).all() for img in images])
    return batch, np.where(bad, "nan_pixels", "").astype(object)


def label_check(classes: list[str]):
    known = list(classes)

    def check(batch):
        labels = np.asarray(batch["label"]).astype(str)
        return batch, np.where(labels == "", "missing_label", np.where(np.isin(labels, known), "", "unknown_label")).astype(object)
    return check


# --- features --------------------------------------------------------------------------------

class ImagePreprocessor(Preprocessor):
    """Pixel standardisation with mean/std fitted on the training split; class index map."""

    kind = "image"
    input_columns = ["image"]
    label_column = "label"

    def __init__(self, shape: list[int], classes: list[str], pixel_max: float, mean: float | None = None, std: float | None = None):
        self.shape = [int(s) for s in shape]
        self.labels = LabelEncoder(classes)
        self.pixel_max = float(pixel_max)
        self.mean, self.std = mean, std

    def fit(self, train_ds):
        partials = fit_partials(train_ds, lambda b: moments(np.stack(list(b["image"])) if b["image"].dtype == object else b["image"]), batch_format="numpy")
        self.mean, self.std = merge_moments(partials)
        return self

    def transform(self, batch, with_target=True):
        images = batch["image"]
        if images.dtype == object:
            images = np.stack(list(images))
        x = (images.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        x = x[:, None] if x.ndim == 3 else np.transpose(x, (0, 3, 1, 2))  # N,C,H,W
        out = {"x": np.ascontiguousarray(x, dtype=np.float32)}
        if with_target:
            out["y"] = self.labels.encode(batch["label"])
        return out

    def in_shape(self) -> tuple[int, int, int]:
        h, w = self.shape[:2]
        return (self.shape[2] if len(self.shape) == 3 else 1, h, w)

    def state(self):
        return {"kind": "image", "shape": self.shape, "classes": self.labels.classes, "pixel_max": self.pixel_max,
                "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state):
        return cls(state["shape"], state["classes"], state["pixel_max"], state["mean"], state["std"])


class ImageTask(ClassificationTask):
    name = "image"
    config_class = ImageConfig
    request_model = ImageRequest
    batch_format = "numpy"

    def read(self, cfg: ImageConfig, columns: list[str] | None = None):
        """The embedded digits, or image files / Parquet / .npz; with labels, options left null
        (shape, classes) are filled from the data."""
        import ray.data

        from pipeline.data.ingest import read_dataset

        opts = cfg.data.options
        if cfg.data.source == "builtin":
            from ray.data.extensions import TensorArray

            from pipeline.datasets import digits

            arrays = digits.load_digits_arrays()
            opts.shape = opts.shape or list(digits.SHAPE)
            opts.classes = opts.classes or list(digits.CLASSES)
            opts.pixel_max = opts.pixel_max or digits.PIXEL_MAX
            frame = pd.DataFrame({"id": arrays["id"], "image": TensorArray(arrays["image"]), "label": arrays["label"]})
            return ray.data.from_pandas(frame)
        ds = read_dataset(cfg.data.source, cfg.data.format, image_mode=opts.mode)
        ds = ds.map_batches(rows_from_arrays, fn_kwargs={"labelled": columns is None}, batch_format="numpy")
        if columns is None:
            infer_options(cfg, ds)
        return ds

    def example_request(self):
        from pipeline.datasets.digits import load_digits_arrays

        arrays = load_digits_arrays()
        return {"pixels": arrays["image"][0].tolist()}, str(arrays["label"][0])

    def checks(self, cfg):
        opts = cfg.data.options
        return [label_check(opts.classes), shape_check(tuple(opts.shape)), nan_check]

    def fit_preprocessor(self, cfg, splits):
        opts = cfg.data.options
        return ImagePreprocessor(opts.shape, opts.classes, opts.pixel_max or 255.0).fit(splits["train"])

    def build_model(self, cfg, preprocessor):
        m = cfg.model
        return CNN(preprocessor.in_shape(), len(preprocessor.labels.classes), m.channels, m.dense, m.dropout, m.batchnorm)

    def augment(self, cfg, batch):
        a = cfg.model.augment
        if not (a.shift or a.rotate):
            return batch
        return {**batch, "x": shift_rotate(batch["x"], a.shift, a.rotate)}

    def request_to_batch(self, request: dict[str, Any], preprocessor: ImagePreprocessor):
        shape = tuple(preprocessor.shape)
        if request.get("pixels") is not None:
            pixels = np.asarray(request["pixels"], dtype=np.float32)
            if pixels.ndim == 1 and pixels.size == int(np.prod(shape)):
                pixels = pixels.reshape(shape)
            if pixels.shape != shape:
                raise RequestError(f"pixels: expected shape {'x'.join(map(str, shape))} ({int(np.prod(shape))} values), got {'x'.join(map(str, pixels.shape)) or 'a scalar'}")
        else:
            pixels = decode_png(request["image_png_base64"], shape, preprocessor.pixel_max)
        return {"image": pixels[None]}


def infer_options(cfg: ImageConfig, ds) -> None:
    """Fills `shape` (the most common one) and `classes` (all labels seen) when not configured."""
    opts = cfg.data.options
    if opts.shape and opts.classes:
        return
    partials = fit_partials(ds, lambda b: {"shapes": [list(s) for s in image_shapes(b["image"])][:: max(1, len(b["image"]) // 256)],
                                            "labels": sorted(set(np.asarray(b["label"]).astype(str)) - {""})}, batch_format="numpy")
    if not partials:
        raise DataError(f"no images found in {cfg.data.source}")
    if not opts.shape:
        shapes = pd.Series([tuple(s) for p in partials for s in p["shapes"]])
        opts.shape = list(shapes.mode().iloc[0])
    if not opts.classes:
        opts.classes = sorted({c for p in partials for c in p["labels"]})


def shift_rotate(x, shift: int, degrees: float):
    """Each image of a (N, C, H, W) batch moved by a random whole number of pixels up to `shift` each way
    and rotated by a random angle up to `degrees` either way (torch's seeded generator, on the batch's
    device); pixels from outside repeat the border, the background of centred images."""
    import math

    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(degrees)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size
    dx = torch.randint(-shift, shift + 1, (n,), device=x.device) * (2.0 / w)
    dy = torch.randint(-shift, shift + 1, (n,), device=x.device) * (2.0 / h)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def decode_png(data: str, shape: tuple, pixel_max: float) -> np.ndarray:
    """Base64 PNG -> array of the model's shape, rescaled from 0..255 to the training pixel range.

    The pixel count in the header is checked before any pixel is decoded (a small file can claim a huge
    image); any decoder failure is the input's fault and answers 422."""
    from PIL import Image

    try:
        raw = base64.b64decode(data, validate=True)
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > MAX_PNG_PIXELS:
            raise RequestError(f"image_png_base64: {width}x{height} pixels, more than the limit of {MAX_PNG_PIXELS:,}")
        image.load()
    except RequestError:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, checked while reading the header
        raise RequestError(f"image_png_base64: the image is larger than the limit of {MAX_PNG_PIXELS:,} pixels") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types (SyntaxError, EOFError, struct.error, ...)
        raise RequestError(f"image_png_base64: not a base64-encoded image ({type(exc).__name__})") from None
    image = image.convert("RGB" if len(shape) == 3 else "L")
    if image.size != (shape[1], shape[0]):
        image = image.resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) * (pixel_max / 255.0)
