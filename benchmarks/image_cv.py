"""How the image workload's model defaults were chosen: k-fold cross-validation on train + val, never test.

The digits' validation split has 270 images, so one run's validation accuracy cannot tell settings apart
that differ by a few images. This script pools the pipeline's train and val splits (the same data stages
and split as `pipeline run image`), cuts them into k folds and trains the image task's CNN once per fold
and variant in this process (a plain loop with the task's schedule, early stopping on the held-out fold
and its best epoch kept, as the pipeline does). The test split is not read.

    python benchmarks/image_cv.py                       # the variants below, 5 folds
    python benchmarks/image_cv.py --folds 3 --only base,wide_smooth

Prints mean and spread of the held-out accuracy per variant and writes results/image_cv.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from pipeline.tasks import get_task, load_config  # noqa: E402
from pipeline.train.loop import make_optimizer  # noqa: E402
from pipeline.train.schedules import lr_factor  # noqa: E402

REFERENCE = {"model.channels": [32, 64, 64], "model.dense": 64, "train.label_smoothing": 0.0}
VARIANTS = {  # overrides over the reference design's CNN (the defaults before 2026-11-29)
    "base": {},
    "smooth": {"train.label_smoothing": 0.1},
    "wide": {"model.channels": [64, 128, 128], "model.dense": 128},
    "dropout_0.5": {"model.dropout": 0.5},
    "smooth_dropout_0.5": {"train.label_smoothing": 0.1, "model.dropout": 0.5},
    "wide_smooth": {"model.channels": [64, 128, 128], "model.dense": 128, "train.label_smoothing": 0.1},
    "shift_1": {"model.augment.shift": 1},
}


def pooled_train_val() -> tuple[torch.Tensor, torch.Tensor, object]:
    """The pipeline's train and val splits of the embedded digits, standardised with train's statistics."""
    from pipeline.flow import feature_arrays, prepare_data
    from pipeline.runtime import init_ray

    init_ray()
    task, cfg = get_task("image"), load_config("image")
    prepared = prepare_data(task, cfg, str(REPO / "runs" / "image_cv"), log=lambda _: None)
    preprocessor = task.fit_preprocessor(cfg, prepared.splits)
    parts = [feature_arrays(prepared.splits[s].map_batches(preprocessor.transform, batch_format="numpy")) for s in ("train", "val")]
    x, y = (torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in ("x", "y"))
    return x, y, preprocessor


def fit_fold(cfg, preprocessor, x_train, y_train, x_held, y_held, seed: int) -> float:
    """Best held-out accuracy over the epochs (the pipeline keeps its best checkpoint the same way)."""
    task, tc = get_task("image"), cfg.train
    torch.manual_seed(seed)
    model = task.build_model(cfg, preprocessor)
    optimizer = make_optimizer(model.parameters(), tc)
    batch = tc.batch_size * tc.num_workers  # the pipeline's global batch (per-worker batch x workers)
    best, stale = -1.0, 0
    for epoch in range(tc.epochs):
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * lr_factor(tc.schedule, epoch, tc.epochs)
        model.train()
        order = torch.randperm(len(y_train))
        for start in range(0, len(order) - len(order) % batch, batch):
            i = order[start:start + batch]
            step = task.augment(cfg, {"x": x_train[i], "y": y_train[i]})
            loss = task.loss(cfg, model(step["x"]), step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_held).argmax(1) == y_held).float().mean().item()
        if accuracy > best:
            best, stale = accuracy, 0
        else:
            stale += 1
            if stale >= tc.early_stopping.patience:
                break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args()
    torch.set_num_threads(2)
    x, y, preprocessor = pooled_train_val()
    folds = np.array_split(np.random.default_rng(0).permutation(len(y)), args.folds)
    names = args.only.split(",") if args.only else list(VARIANTS)
    results = {}
    for name in names:
        cfg = load_config("image", overrides={**REFERENCE, **VARIANTS[name]})
        started, scores = time.perf_counter(), []
        for k, held in enumerate(folds):
            keep = np.setdiff1d(np.arange(len(y)), held)
            scores.append(fit_fold(cfg, preprocessor, x[keep], y[keep], x[held], y[held], seed=k))
        results[name] = {"overrides": VARIANTS[name], "fold_accuracy": scores, "mean": float(np.mean(scores)),
                         "std": float(np.std(scores)), "seconds": time.perf_counter() - started}
        print(f"{name:20s} {np.mean(scores):.4f} ± {np.std(scores):.4f}  folds {np.round(scores, 4).tolist()}  "
              f"({results[name]['seconds']:.0f}s)", flush=True)
    out = REPO / "benchmarks" / "results" / "image_cv.json"
    out.write_text(json.dumps({"folds": args.folds, "rows": len(y), "variants": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
