"""TensorBoard event files for every candidate of a run: per-epoch training and validation metrics,
the learning rate, the held-out metrics and the test confusion matrix as an image.

Written to a local temporary folder by tensorboardX, then copied to the run's storage URI (any
filesystem the storage layer reaches), so `tensorboard --logdir <output>` works on a laptop and on a
run stored in S3 alike (TensorBoard reads s3:// log dirs).
"""

from __future__ import annotations

import io
import tempfile
from typing import Any

import numpy as np

from pipeline import storage

SKIPPED = {"epoch", "base_lr", "stopped_early"}  # the step itself, PBT's unscheduled lr, a flag


def tag(key: str) -> str:
    """`train_loss` -> `train/loss`, `val_ndcg@10` -> `val/ndcg@10`; others as they are."""
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1:]}"
    return key


def write_events(uri: str, history: list[dict[str, Any]], evaluated: dict[str, dict], confusion_png: str | None = None) -> None:
    """Event files under `uri`: one step per epoch of `history`, then the final `evaluated` val and test
    metrics (at the last epoch's step, 0 for a fitted baseline) and the confusion matrix PNG."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp, flush_secs=3600)
        step = 0
        for record in history:
            step = int(record.get("epoch", step + 1))
            for key, value in record.items():
                if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(tag(key), float(value), step)
        for split, metrics in evaluated.items():
            for key, value in metrics.items():
                if isinstance(value, float):
                    writer.add_scalar(f"{split}_final/{key}", value, step)
        if confusion_png and storage.exists(confusion_png):
            from PIL import Image

            image = np.asarray(Image.open(io.BytesIO(storage.read_bytes(confusion_png))).convert("RGB"))
            writer.add_image("test_final/confusion_matrix", image, step, dataformats="HWC")
        writer.close()
        storage.copy_dir(tmp, uri)
