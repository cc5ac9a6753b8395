"""The pipeline's training loop on Ray Train against a bare PyTorch loop: same model, data, batch size and
precision, run one after the other from this one process on the same device.

Model: the image task's CNN (`pipeline.models.cnn.CNN`, its default config). Data: synthetic 32x32x3 images
in 10 classes (a class-dependent pattern plus noise, so the loss falls), with a validation set of a tenth
the size. The Ray Train side is the pipeline's own `fit_candidates()` (data from Ray Data, a checkpoint and a
report per epoch); the bare side is the loop a PyTorch user writes by hand, with the data already in memory (on the
GPU with --use-gpu) and the same validation pass per epoch. A third row runs the pipeline's loop in this
process without Ray Train, which tells the loop's own cost apart from Ray Train's.

    python benchmarks/train_loop.py              # CPU: Ray Train with 2 CPU workers vs one bare process
    python benchmarks/train_loop.py --use-gpu    # GPU: Ray Train with 1 GPU worker vs the bare loop, bf16

Reported per side: steady-state epoch (median of epochs 2..N: train + validation) and its throughput,
the first epoch, and the whole run's wall time (Ray Train: worker start-up and shutdown included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.tasks import get_task, load_config  # noqa: E402
from pipeline.tasks.image import ImagePreprocessor  # noqa: E402
from pipeline.train.loop import InMemoryShard, TuneSession  # noqa: E402

CLASSES = [str(i) for i in range(10)]
SHAPE = [32, 32, 3]


def synthetic_images(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised N,C,H,W float32 images and int64 labels: each class a fixed random pattern plus noise."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(0).normal(size=(len(CLASSES), SHAPE[2], *SHAPE[:2])).astype(np.float32)
    y = rng.integers(0, len(CLASSES), rows)
    x = 0.5 * patterns[y] + rng.normal(size=(rows, SHAPE[2], *SHAPE[:2])).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64)


def bench_config(args, cpus_per_worker: int | None = None):
    return load_config("image", overrides={
        "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.early_stopping.patience": 0,
        "train.num_workers": args.workers, "train.use_gpu": args.use_gpu, "train.amp": args.amp,
        "train.compile": args.compile, "train.cpus_per_worker": cpus_per_worker or args.cpus_per_worker,
        "train.schedule.name": "constant",
        "model.channels": [32, 64, 64], "model.dense": 64,  # the widths of every recorded result (and the issue's)
        "data.options.shape": SHAPE, "data.options.classes": CLASSES,
    })


def preprocessor_state() -> dict:
    return ImagePreprocessor(SHAPE, CLASSES, 1.0, 0.0, 1.0).state()  # the data is standardised already


def summarize(name: str, epoch_seconds: list[float], wall: float, train_rows: int, **extra) -> dict:
    steady = statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else epoch_seconds[0]
    return {"loop": name, "first_epoch_s": epoch_seconds[0], "steady_epoch_s": steady,
            "rows_per_s": train_rows / steady, "wall_s": wall, "epoch_seconds": epoch_seconds, **extra}


def bare_loop(args, data) -> dict:
    """What one writes by hand: data in memory (on the GPU when there is one), shuffled by index each epoch,
    the loss summed on the device, one validation pass per epoch."""
    import torch

    from pipeline.train.loop import amp_dtype, gpu_layout

    started = time.perf_counter()
    device = torch.device("cuda" if args.use_gpu else "cpu")
    torch.manual_seed(0)
    torch.set_num_threads(args.bare_threads)
    cfg = bench_config(args)
    model = get_task("image").build_model(cfg, ImagePreprocessor.from_state(preprocessor_state()))
    channels_last = gpu_layout(model, device)  # the same cuDNN/TF32/layout settings as the pipeline's loop
    model = model.to(device)
    if args.compile:
        model = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)  # as the pipeline's
    precision = amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and precision == torch.float16)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, y = (torch.from_numpy(a).to(device) for a in data["train"])
    x = x.contiguous(memory_format=fmt)
    vx, vy = (torch.from_numpy(a).to(device) for a in data["val"])
    vx = vx.contiguous(memory_format=fmt)
    n, bs = len(y), args.batch_size
    seconds = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n - n % bs if n > bs else n, bs):
            idx = order[start:start + bs]
            with torch.autocast(device.type, dtype=precision, enabled=args.amp):
                loss = torch.nn.functional.cross_entropy(model(x[idx].contiguous(memory_format=fmt)), y[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach().float() * len(idx)
        model.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=precision, enabled=args.amp):
            for start in range(0, len(vy), max(bs, 256)):
                correct += (model(vx[start:start + max(bs, 256)]).argmax(1) == vy[start:start + max(bs, 256)]).sum()
        train_loss, val_accuracy = float(loss_sum) / n, float(correct) / len(vy)  # one host sync per epoch
        seconds.append(time.perf_counter() - t0)
        print(f"[bare] epoch {epoch + 1}/{args.epochs}  train_loss={train_loss:.4f}  val_accuracy={val_accuracy:.4f}  "
              f"epoch_seconds={seconds[-1]:.3f}", flush=True)
    return summarize("bare PyTorch", seconds, time.perf_counter() - started, n, threads=args.bare_threads)


class LocalSession(TuneSession):
    """The pipeline's own training loop (`run_training`) without Ray Train: in this process, as a Tune
    trial runs it, the splits handed over whole, reports kept in a list. It tells the loop's cost apart
    from Ray Train's."""

    def __init__(self, data: dict, device):
        import ray

        handed = {name: {"rows": ray.put({"x": x, "y": y}), "ranges": [[(0, len(y))]]} for name, (x, y) in data.items()}
        super().__init__({name: InMemoryShard(h, 0) for name, h in handed.items()})
        self.torch_device, self.history = device, []

    def device(self):
        return self.torch_device  # --use-gpu decides, not whether a GPU is present

    def checkpoint(self):
        return None

    def node_ids(self) -> list[str]:
        return ["this process"]

    def report(self, metrics: dict, checkpoint_dir, ranks=(False, [])) -> None:
        self.history.append(metrics)


def local_loop(args, data) -> dict:
    import torch

    from pipeline.train.loop import run_training
    from pipeline.train.trainer import loop_config

    started = time.perf_counter()
    cfg = bench_config(args, cpus_per_worker=args.bare_threads)  # the bare loop's threads
    session = LocalSession(data, torch.device("cuda" if args.use_gpu else "cpu"))
    run_training(loop_config(cfg, preprocessor_state(), len(data["train"][1]), "local"), session)
    seconds = [m["epoch_seconds"] for m in session.history]
    return summarize("pipeline loop, no Ray Train", seconds, time.perf_counter() - started, len(data["train"][1]),
                     threads=args.bare_threads)


def ray_train_loop(args, data, storage: str) -> dict:
    import pandas as pd
    import ray.data
    from ray.data.extensions import TensorArray

    from pipeline.train.trainer import Candidate, fit_candidates

    started = time.perf_counter()
    datasets = {name: ray.data.from_pandas(pd.DataFrame({"x": TensorArray(x), "y": y})).materialize()
                for name, (x, y) in data.items()}
    run = f"bench-{int(time.time())}"
    fitted = fit_candidates([Candidate("cnn", bench_config(args), datasets, preprocessor_state(), len(data["train"][1]), "ray-train",
                                       f"{storage}/{run}-model")], storage, run)
    seconds = [e["epoch_seconds"] for e in fitted.outcomes["cnn"].history]
    return summarize(f"Ray Train, {args.workers} {'GPU' if args.use_gpu else 'CPU'} worker(s)", seconds,
                     time.perf_counter() - started, len(data["train"][1]), phases=fitted.phases,
                     cpus_per_worker=args.cpus_per_worker)


def device_name(use_gpu: bool) -> str:
    import torch

    if use_gpu:
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-gpu", action="store_true", help="1 GPU worker against the bare loop on the GPU")
    parser.add_argument("--rows", type=int, help="training rows (default: 21,000 on a GPU, 4,096 on CPU)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, help="default: 512 on a GPU, 128 on CPU")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="full fp32 (default: bf16 autocast on a GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile on both sides")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "train_loop.json"))
    args = parser.parse_args()
    cpus = os.cpu_count() or 2
    args.rows = args.rows or (21_000 if args.use_gpu else 4_096)
    args.batch_size = args.batch_size or (512 if args.use_gpu else 128)
    args.amp = args.amp and args.use_gpu  # bf16 on a CPU is slower than fp32 on most CPUs
    args.workers = 1 if args.use_gpu else 2
    args.cpus_per_worker = max(1, cpus // args.workers) if not args.use_gpu else max(1, min(8, cpus - 1))
    args.bare_threads = args.cpus_per_worker * args.workers if not args.use_gpu else args.cpus_per_worker

    data = {"train": synthetic_images(args.rows, 1), "val": synthetic_images(max(1, args.rows // 10), 2)}
    from pipeline.runtime import init_ray

    init_ray(num_cpus=cpus)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bare_loop(args, data), local_loop(args, data), ray_train_loop(args, data, os.path.join(tmp, "checkpoints"))]
    bare, local, ray_side = results
    summary = {
        "device": device_name(args.use_gpu), "command": "python benchmarks/train_loop.py" + (" --use-gpu" if args.use_gpu else ""),
        "rows": args.rows, "batch_size": args.batch_size, "epochs": args.epochs,
        "precision": "bf16 autocast" if args.amp else "fp32", "compile": args.compile, "results": results,
        "steady_throughput_ratio": ray_side["rows_per_s"] / bare["rows_per_s"],
        "first_epoch_ratio": ray_side["first_epoch_s"] / bare["first_epoch_s"],
        "wall_ratio": ray_side["wall_s"] / bare["wall_s"],
        "loop_steady_throughput_ratio": local["rows_per_s"] / bare["rows_per_s"],
    }
    print(f"\n{summary['device']}, {args.rows:,} rows of 32x32x3, batch {args.batch_size}, {summary['precision']}, {args.epochs} epochs")
    print(f"{'loop':<28}{'steady epoch':>14}{'rows/s':>10}{'first epoch':>13}{'wall':>9}")
    for r in results:
        print(f"{r['loop']:<28}{r['steady_epoch_s']:>13.3f}s{r['rows_per_s']:>10,.0f}{r['first_epoch_s']:>12.2f}s{r['wall_s']:>8.1f}s")
    print(f"Ray Train / bare: steady-state throughput {summary['steady_throughput_ratio']:.2f}x, "
          f"first epoch {summary['first_epoch_ratio']:.2f}x the time, wall {summary['wall_ratio']:.2f}x "
          f"(Ray Train phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in ray_side["phases"].items()) + ")")
    print(f"The pipeline's loop without Ray Train / bare: steady-state throughput {summary['loop_steady_throughput_ratio']:.2f}x")
    output = args.output if not args.use_gpu or args.output.endswith("_gpu.json") else args.output.replace(".json", "_gpu.json")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(summary, indent=2))
    print(f"written: {output}")


if __name__ == "__main__":
    main()
