"""Grid search trained to full length vs ASHA over the same space, on the image workload, in one run.

Space: 4 learning rates x 4 LR schedules (the image config's `tune.grid`). Both sweeps use the same
training loop, data, epochs (early stopping off), trials at a time and resources; only the scheduler
differs (FIFO: every trial runs every epoch; ASHA: stops the weaker trials at 2, 6 and 18 epochs).

    python benchmarks/tune_asha_vs_grid.py                 # 30 epochs per trial
    python benchmarks/tune_asha_vs_grid.py --epochs 10     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.tasks import load_config  # noqa: E402
from pipeline.registry import Registry  # noqa: E402
from pipeline.runtime import init_ray  # noqa: E402
from pipeline.tune import TuneOptions, run_tune  # noqa: E402


def sweep(scheduler: str, epochs: int, concurrent: int, root: str) -> dict:
    cfg = load_config("image", overrides={"train.epochs": epochs, "train.early_stopping.patience": 0})
    opts = TuneOptions(search="grid", scheduler=scheduler, max_concurrent=concurrent, cpus_per_trial=1)
    started = time.perf_counter()
    metrics = run_tune("image", cfg, opts, os.path.join(root, scheduler), Registry(os.path.join(root, "registry")),
                       log=lambda line: print(line, flush=True) if line.startswith("[tune] ") and "results" not in line else None)
    return {"scheduler": scheduler, "trials": metrics["tune"]["trials"], "trial_epochs": metrics["tune"]["trial_epochs"],
            "best_val_accuracy": metrics["tune"]["best_val_accuracy"], "best_config": metrics["tune"]["best_config"],
            "test_accuracy_of_best": metrics["test"]["accuracy"], "wall_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "tune_asha_vs_grid.json"))
    args = parser.parse_args()
    init_ray(num_cpus=os.cpu_count())
    with tempfile.TemporaryDirectory() as root:
        grid = sweep("fifo", args.epochs, args.max_concurrent, root)
        asha = sweep("asha", args.epochs, args.max_concurrent, root)
    summary = {"epochs_per_trial": args.epochs, "max_concurrent": args.max_concurrent, "cpus": os.cpu_count(),
               "grid": grid, "asha": asha,
               "accuracy_gap_points": 100 * (grid["best_val_accuracy"] - asha["best_val_accuracy"]),
               "trial_epochs_ratio": asha["trial_epochs"] / grid["trial_epochs"],
               "wall_time_ratio": asha["wall_seconds"] / grid["wall_seconds"]}
    print(f"{'sweep':<6}{'trials':>8}{'trial-epochs':>14}{'best val acc':>14}{'wall s':>9}")
    for r in (grid, asha):
        print(f"{'grid' if r is grid else 'asha':<6}{r['trials']:>8}{r['trial_epochs']:>14}{r['best_val_accuracy']:>14.4f}{r['wall_seconds']:>9.0f}")
    print(f"ASHA vs grid: {summary['accuracy_gap_points']:+.2f} accuracy points behind, "
          f"{100 * summary['trial_epochs_ratio']:.0f}% of the trial-epochs, {100 * summary['wall_time_ratio']:.0f}% of the wall time")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(summary, fh, indent=2)


if __name__ == "__main__":
    main()
