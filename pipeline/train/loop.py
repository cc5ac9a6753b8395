"""The one training loop, run on every Ray Train worker (by `pipeline run` and by `pipeline tune`).

Task-specific parts (model, loss, metrics) come from the task plug-in; everything else (DDP, data
shards, AMP, optimizer, LR schedule, checkpoint per epoch, resume, early stopping) lives here once.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.data.features import load_preprocessor
from pipeline.tasks import config_from_dict, get_task
from pipeline.train.checkpoint import (
    HISTORY_FILE,
    load_train_state,
    load_weights,
    save_model_dir,
    save_train_state,
)
from pipeline.storage import write_json
from pipeline.train.schedules import lr_factor


def make_optimizer(params, tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay, nesterov=tc.momentum > 0)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    return torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay)


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best + min_delta if mode == "max" else value < best - min_delta


def all_reduce_sums(sums: dict[str, float], world_size: int) -> dict[str, float]:
    if world_size == 1:
        return sums
    import torch.distributed as dist

    keys = sorted(sums)
    # float64 on the CPU keeps the sums exact enough and works with the gloo backend.
    buf = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        buf = buf.cuda()
    dist.all_reduce(buf)
    return dict(zip(keys, buf.cpu().tolist()))


class ShardData:
    """A worker's shard of a split. With `cache`, it is pulled from Ray Data once and kept in memory
    (fast, and the per-epoch order is a seeded permutation); otherwise it streams every epoch."""

    def __init__(self, shard, device, cache: bool, shuffle_buffer: int, seed: int):
        self.shard, self.device, self.cache, self.shuffle_buffer, self.seed = shard, device, cache, shuffle_buffer, seed
        self.tensors: dict[str, torch.Tensor] | None = None

    def batches(self, epoch: int, batch_size: int, shuffle: bool, drop_last: bool = False):
        if not self.cache:
            yield from self.shard.iter_torch_batches(
                batch_size=batch_size, drop_last=drop_last, device=self.device,
                local_shuffle_buffer_size=self.shuffle_buffer if shuffle and self.shuffle_buffer else None,
                local_shuffle_seed=self.seed + epoch if shuffle and self.shuffle_buffer else None,
            )
            return
        if self.tensors is None:
            parts = list(self.shard.iter_torch_batches(batch_size=65536))
            self.tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        if not self.tensors:
            return
        n = len(next(iter(self.tensors.values())))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield {k: v[idx].to(self.device, non_blocking=True) for k, v in self.tensors.items()}


def quiet_train_worker_logs() -> None:
    """Ray Train logs every report at INFO under a logger named after its file; keep epochs readable."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # "Checkpoint created" per epoch


class TrainSession:
    """The loop's view of a Ray Train worker: rank, shards, checkpoints, reports, DDP."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def dataset(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def node_ids(self) -> list[str]:
        """The Ray node of every rank (rank order), so a run can show where its workers ran."""
        import ray

        mine = ray.get_runtime_context().get_node_id()
        if self.world == 1:
            return [mine]
        import torch.distributed as dist

        nodes: list = [None] * self.world
        dist.all_gather_object(nodes, mine)
        return nodes

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)


class TuneSession:
    """The same loop as one Ray Tune trial (a single process): datasets are passed in whole,
    checkpoints and reports go to Tune (so ASHA can stop it and PBT can clone and perturb it)."""

    rank, world = 0, 1

    def __init__(self, datasets: dict):
        self.datasets = datasets

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Tune sets the trial's GPUs

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device())

    def dataset(self, name: str):
        return self.datasets[name]

    def checkpoint(self):
        from ray import tune

        return tune.get_checkpoint()

    def node_ids(self) -> list[str]:
        import ray

        return [ray.get_runtime_context().get_node_id()]

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        from ray import tune

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's entry point."""
    run_training(loop_config, TrainSession())


def run_training(loop_config: dict[str, Any], session) -> None:
    quiet_train_worker_logs()
    cfg = config_from_dict(loop_config["config"])
    task = get_task(cfg.task)
    tc = cfg.train
    prep_state = loop_config["preprocessor"]
    rank, world = session.rank, session.world
    label = loop_config["label"]

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(max(1, tc.cpus_per_worker))
    device = session.device()
    model = session.prepare_model(task.build_model(cfg, load_preprocessor(prep_state)))
    optimizer = make_optimizer(model.parameters(), tc)

    state: dict[str, Any] = {"epoch": 0, "best": float("nan"), "stale": 0, "history": [], "resumed_from": [], "worker_nodes": []}
    checkpoint = session.checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as path:
            load_weights(path, model)
            saved = load_train_state(path)
        optimizer.load_state_dict(saved["optimizer"])
        state = {k: saved.get(k, state[k]) for k in state}
        state["resumed_from"].append(state["epoch"])  # restarts after a failure, or a resumed run
        if rank == 0:
            print(f"[{label}] resumed from checkpoint after epoch {state['epoch']}", flush=True)
    state["worker_nodes"].append(session.node_ids())

    use_amp = tc.amp
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and device.type == "cuda")
    train_rows = int(loop_config["train_rows"])
    steps_per_epoch = max(1, train_rows // world // tc.batch_size)
    drop_last = train_rows // world > tc.batch_size
    train_data = ShardData(session.dataset("train"), device, tc.cache_data, tc.shuffle_buffer, cfg.seed + rank)
    val_data = ShardData(session.dataset("val"), device, tc.cache_data, 0, cfg.seed)

    for epoch in range(state["epoch"], tc.epochs):
        started = time.perf_counter()
        # Reproducible but different per rank and epoch (dropout, augmentation, negative sampling).
        torch.manual_seed(cfg.seed + 1000 * rank + epoch)
        model.train()
        loss_sum, rows = 0.0, 0
        lr = tc.lr
        for step, batch in enumerate(train_data.batches(epoch, tc.batch_size, shuffle=True, drop_last=drop_last)):
            lr = tc.lr * lr_factor(tc.schedule, epoch + min(step / steps_per_epoch, 1.0), tc.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                outputs = task.forward(model, batch)
                loss = task.loss(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = len(next(iter(batch.values())))
            loss_sum += float(loss.detach()) * n
            rows += n

        model.eval()
        val_sums: dict[str, float] = {}
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            for batch in val_data.batches(epoch, max(tc.batch_size, 256), shuffle=False):
                for k, v in task.eval_sums(task.forward(model, batch), batch).items():
                    val_sums[k] = val_sums.get(k, 0.0) + float(v)
        totals = all_reduce_sums({"train_loss_sum": loss_sum, "train_rows": float(rows), **val_sums}, world)
        metrics = {
            "epoch": epoch + 1,
            "lr": lr,
            "base_lr": tc.lr,  # before the schedule: what PBT perturbs
            "train_loss": totals.pop("train_loss_sum") / max(totals.pop("train_rows"), 1.0),
            **{f"val_{k}": v for k, v in task.eval_metrics(totals).items()},
            "epoch_seconds": time.perf_counter() - started,
        }
        if tc.metric not in metrics:
            raise ValueError(f"train.metric {tc.metric!r} is not reported; choose one of {sorted(metrics)}")
        if is_improvement(metrics[tc.metric], state["best"], tc.mode, tc.early_stopping.min_delta):
            state["best"], state["stale"] = metrics[tc.metric], 0
        else:
            state["stale"] += 1
        state["epoch"] = epoch + 1
        stop = tc.early_stopping.patience > 0 and state["stale"] >= tc.early_stopping.patience
        metrics["stopped_early"] = bool(stop and epoch + 1 < tc.epochs)
        state["history"].append(dict(metrics))

        if rank == 0:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "stopped_early"))
            print(f"[{label}] epoch {epoch + 1}/{tc.epochs}  {shown}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                save_model_dir(tmp, model, prep_state, loop_config["config"])
                save_train_state(tmp, {"optimizer": optimizer.state_dict(), **state})
                write_json(os.path.join(tmp, HISTORY_FILE), {k: state[k] for k in ("resumed_from", "worker_nodes")} | {"epochs": state["history"]})
                session.report(metrics, tmp)
        else:
            session.report(metrics, None)
        if stop:
            if rank == 0:
                print(f"[{label}] early stopping: no {tc.metric} improvement for {state['stale']} epochs", flush=True)
            break
