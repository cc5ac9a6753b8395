"""The one training loop, run on every Ray Train worker (by `pipeline run` and by `pipeline tune`).

Task-specific parts (model, loss, metrics) come from the task plug-in; everything else (DDP, data
shards, AMP, optimizer, LR schedule, checkpoint per epoch, resume, early stopping) lives here once.
"""

from __future__ import annotations

import contextlib
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
from pipeline import storage
from pipeline.storage import json_bytes, write_json
from pipeline.train.schedules import lr_factor


def make_optimizer(params, tc: TrainConfig) -> torch.optim.Optimizer:
    """Fused (on CPUs and GPUs alike): one kernel per step for all parameters instead of several per tensor.
    On a CPU it is what makes large embedding tables cheap to update: AdamW over the text models' 1.2M
    embedding weights took 14-22 ms a step with the per-tensor (foreach) kernels, 2.5 ms fused."""
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay, nesterov=tc.momentum > 0, fused=True)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, fused=True)
    return torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay, fused=True)


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


def amp_dtype(device: torch.device, wanted: str = "auto") -> torch.dtype:
    """bf16 where the device runs it natively (CPUs, Ampere and newer GPUs): no loss scaling, no per-step
    sync; fp16 (with a GradScaler) on older GPUs, or when asked for."""
    if wanted == "fp16" or (wanted == "auto" and device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def uses_conv2d(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def fits_on_device(tensors: dict[str, torch.Tensor], device: torch.device, share: float = 0.5) -> bool:
    """Whether the whole shard fits in `share` of the GPU's free memory (it then moves there once)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors.values()) <= share * free


class InMemoryShard:
    """A worker's rows of a small split handed over whole through the object store (see
    `trainer.in_memory_datasets`): every worker reads the same arrays (zero-copy on its node) and keeps the
    rows Ray Train's equal streaming split would give its rank."""

    def __init__(self, handed: dict, rank: int):
        self.handed, self.rank = handed, rank

    def tensors(self) -> dict[str, torch.Tensor]:
        import ray

        return take_rows(ray.get(self.handed["rows"]), self.handed["ranges"][self.rank])


def take_rows(arrays: dict[str, np.ndarray], ranges: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """The rows `[start, stop)` of each range, in order, as tensors (a writable copy: the shared arrays are read-only)."""
    return {k: torch.from_numpy(np.concatenate([v[start:stop] for start, stop in ranges]) if ranges else v[:0].copy())
            for k, v in arrays.items()}


class ShardData:
    """A worker's shard of a split. With `cache`, it is pulled from Ray Data once and kept in memory (on the
    GPU when it fits there, else in host memory with each batch pinned and copied without blocking), and each epoch's order is a
    seeded permutation; otherwise it streams every epoch. `channels_last` lays image batches out for cuDNN."""

    def __init__(self, shard, device, cache: bool, shuffle_buffer: int, seed: int, channels_last: bool = False):
        self.shard, self.device, self.cache, self.shuffle_buffer, self.seed = shard, device, cache, shuffle_buffer, seed
        self.channels_last = channels_last
        self.tensors: dict[str, torch.Tensor] | None = None

    def layout(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.channels_last:
            return batch
        return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}

    def load(self) -> dict[str, torch.Tensor]:
        if isinstance(self.shard, InMemoryShard):
            tensors = self.shard.tensors()
        else:
            parts = list(self.shard.iter_torch_batches(batch_size=65536))
            tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        if fits_on_device(tensors, self.device):
            return {k: v.to(self.device) for k, v in tensors.items()}
        return tensors  # host memory: each batch's gathered rows are pinned on their way (a pinned shard's index is not)

    def batches(self, epoch: int, batch_size: int, shuffle: bool, drop_last: bool = False):
        if not self.cache:
            for batch in self.shard.iter_torch_batches(
                batch_size=batch_size, drop_last=drop_last, device=self.device,
                local_shuffle_buffer_size=self.shuffle_buffer if shuffle and self.shuffle_buffer else None,
                local_shuffle_seed=self.seed + epoch if shuffle and self.shuffle_buffer else None,
            ):
                yield self.layout(batch)
            return
        if self.tensors is None:
            self.tensors = self.load()
        if not self.tensors:
            return
        first = next(iter(self.tensors.values()))
        n, on_device = len(first), first.device == self.device
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)) if shuffle else torch.arange(n)
        if on_device:
            order = order.to(self.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v[idx] for k, v in self.tensors.items()}
            if not on_device and self.device.type == "cuda":  # gathered into pinned memory, copied while the GPU works
                batch = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
            yield self.layout(batch)  # indexing drops channels-last strides: one copy kernel on the GPU, nothing on CPU


class RankStreams:
    """The random streams (dropout, augmentation, negative sampling) of the data-parallel ranks a process
    steps, seeded per rank and epoch: reproducible, and different per rank. One rank: torch's global
    generators, seeded. Several (a worker training alone for the whole group): each rank's part of a
    step draws from that rank's own stream, saved between its turns."""

    def __init__(self, seed: int, epoch: int, ranks: list[int], device: torch.device):
        self.device, self.states = device, []
        for rank in ranks:
            torch.manual_seed(seed + 1000 * rank + epoch)
            if len(ranks) > 1:
                self.states.append(self.capture())

    def capture(self) -> tuple:
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    @contextlib.contextmanager
    def of(self, part: int):
        if not self.states:
            yield
            return
        cpu, cuda = self.states[part]
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)
        try:
            yield
        finally:
            self.states[part] = self.capture()


def train_step(task, cfg, model: torch.nn.Module, optimizer: torch.optim.Optimizer, parts: list[dict], scaler=None,
               autocast=contextlib.nullcontext, around=lambda part: contextlib.nullcontext()) -> list[tuple[torch.Tensor, int]]:
    """One optimizer step over `parts`, a batch per data rank: augment, forward and loss (under
    `autocast()`), backward, each part's loss divided by their number (DDP's gradient mean, accumulated by
    a worker standing in for several ranks), then one update (through `scaler` when loss scaling is on).
    `around(part)` wraps each part (its rank's random streams and batch-norm statistics). Returns each
    part's loss (detached, on the device: no host sync) and rows."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for part, batch in enumerate(parts):
        with around(part):
            batch = task.augment(cfg, batch)
            with autocast():
                outputs = task.forward(model, batch)
                loss = task.loss(cfg, outputs, batch)
            scaled = loss if len(parts) == 1 else loss / len(parts)
            (scaler.scale(scaled) if scaler else scaled).backward()
        losses.append((loss.detach().float(), len(next(iter(batch.values())))))
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return losses


@contextlib.contextmanager
def rank_context(streams, norms: list[torch.nn.Module], part: int):
    """A data rank's random streams and, for ranks after the first, frozen batch-norm statistics."""
    with streams.of(part), rank_zero_statistics(norms, part):
        yield


def running_norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's normalisation layers that keep running statistics (batch norm)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats]


@contextlib.contextmanager
def rank_zero_statistics(norms: list[torch.nn.Module], part: int):
    """DDP broadcasts rank 0's buffers before every forward, so the batch-norm running statistics it keeps
    follow rank 0's batches only: a worker standing in for every rank leaves `norms` (`running_norms`) as
    they are during the other ranks' parts (normalisation still uses each batch's own statistics)."""
    norms = norms if part else []
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def gpu_layout(model: torch.nn.Module, device: torch.device) -> bool:
    """On a GPU: cuDNN autotuning, TF32 matmuls, and a channels-last model when it has convolutions (before
    DDP wraps it, whose gradient buckets follow the parameters' layout). Returns whether batches should be
    channels-last too."""
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if not uses_conv2d(model):
        return False
    model.to(memory_format=torch.channels_last)
    return True


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

    def __init__(self, in_memory: dict | None = None):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.data_ranks = [self.rank]  # the data-parallel ranks whose batches (and random streams) this process steps
        self.in_memory = in_memory or {}

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def dataset(self, name: str):
        import ray.train

        if name in self.in_memory:
            return InMemoryShard(self.in_memory[name], self.rank)
        return ray.train.get_dataset_shard(name)

    def shards(self, name: str) -> list:
        """The split's shard of each of `data_ranks`."""
        return [self.dataset(name)]

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

    def report(self, metrics: dict, checkpoint_dir: str | None, ranks: tuple = (False, [])) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    def finish(self, history: dict) -> None:
        """Rank 0, when training ends: nothing to keep beyond the reported checkpoints."""


class CandidateSession(TrainSession):
    """One candidate of a group that the same workers train in turn (`train_candidates_per_worker`): its
    own datasets and resume checkpoint. Ray Train keeps only the latest checkpoints of a group (its
    candidates report different metrics, which no one ranking of checkpoints could serve), so the
    session keeps the candidate's ranked epochs (`rank_epoch`) under `<model_dir>.ranked/` itself, and
    when the candidate ends writes the best one's model folder to `model_dir` with the whole history:
    storage URIs every node of a cluster sees. The latest epoch is always among the ranked ones, and
    `latest.json` there names it once its copy is whole."""

    def __init__(self, in_memory: dict | None, candidate: dict, resume):
        super().__init__(in_memory)
        self.candidate, self.resume = candidate, resume
        self.ranked_dir = candidate["model_dir"].rstrip("/") + ".ranked"

    def dataset(self, name: str):
        return super().dataset(self.candidate["datasets"][name])

    def checkpoint(self):
        return self.resume

    def epoch_dir(self, epoch: int) -> str:
        return storage.join(self.ranked_dir, f"epoch_{epoch:05d}")

    def keep_ranked(self, epoch: int, checkpoint_dir: str | None, ranks: tuple) -> None:
        """`ranks`: whether this epoch is among the ranked ones, and the epochs that dropped out."""
        ranked, dropped = ranks
        if checkpoint_dir and ranked:
            storage.copy_dir(checkpoint_dir, self.epoch_dir(epoch))
            write_json(storage.join(self.ranked_dir, LATEST_FILE), {"epoch": epoch})
        for old in dropped:
            storage.delete_dir(self.epoch_dir(old))

    def report(self, metrics: dict, checkpoint_dir: str | None, ranks: tuple = (False, [])) -> None:
        self.keep_ranked(int(metrics["epoch"]), checkpoint_dir, ranks)
        super().report(metrics, checkpoint_dir)

    def finish(self, history: dict) -> None:
        if history["best_epoch"]:
            storage.copy_dir(self.epoch_dir(history["best_epoch"]), self.candidate["model_dir"])
        storage.write_json(storage.join(self.candidate["model_dir"], HISTORY_FILE), history)  # last: marks it done
        storage.delete_dir(self.ranked_dir)


LATEST_FILE = "latest.json"


def finished(candidate: dict) -> bool:
    """Whether a candidate's model folder is complete (its history is written last)."""
    return storage.exists(storage.join(candidate["model_dir"], HISTORY_FILE))


class AloneSession(CandidateSession):
    """A candidate with `train.data_parallel: false` in a group of several workers: this worker trains it
    by itself (no DDP, no gradient all-reduce) while the other workers train other such candidates. It
    stands in for the whole group: every step holds each rank's batch of its shard, drawn with that
    rank's random stream, and accumulates their gradients (batch-norm running statistics follow rank 0's,
    as DDP's do), so the model is the one data-parallel training gives, up to float rounding. Its
    reports stay out of Ray Train, whose reports are collective over the workers; it resumes after a
    restart from its latest ranked epoch."""

    def __init__(self, in_memory: dict, candidate: dict, group_world: int):
        CandidateSession.__init__(self, in_memory, candidate, None)
        self.rank, self.world, self.data_ranks = 0, 1, list(range(group_world))

    def shards(self, name: str) -> list:
        handed = self.in_memory[self.candidate["datasets"][name]]
        return [InMemoryShard(handed, rank) for rank in self.data_ranks]

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device())

    def checkpoint(self):
        import ray.train

        latest = storage.join(self.ranked_dir, LATEST_FILE)
        if not storage.exists(latest):
            return None
        path, filesystem = storage.ray_storage(self.epoch_dir(int(storage.read_json(latest)["epoch"])))
        return ray.train.Checkpoint(path, filesystem=filesystem)

    def report(self, metrics: dict, checkpoint_dir: str | None, ranks: tuple = (False, [])) -> None:
        self.keep_ranked(int(metrics["epoch"]), checkpoint_dir, ranks)


class TuneSession:
    """The same loop as one Ray Tune trial (a single process): datasets are passed in whole,
    checkpoints and reports go to Tune (so ASHA can stop it and PBT can clone and perturb it)."""

    rank, world, data_ranks = 0, 1, [0]

    def __init__(self, datasets: dict):
        self.datasets = datasets

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Tune sets the trial's GPUs

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device())

    def dataset(self, name: str):
        return self.datasets[name]

    def shards(self, name: str) -> list:
        return [self.dataset(name)]

    def checkpoint(self):
        from ray import tune

        return tune.get_checkpoint()

    def node_ids(self) -> list[str]:
        import ray

        return [ray.get_runtime_context().get_node_id()]

    def report(self, metrics: dict, checkpoint_dir: str | None, ranks: tuple = (False, [])) -> None:
        from ray import tune

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    def finish(self, history: dict) -> None:
        """Tune ranks the trial's checkpoints itself."""


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's entry point for one model (a multi-worker Tune trial)."""
    run_training(loop_config, TrainSession(loop_config.get("in_memory")))


def asks_alone(candidate: dict, world: int) -> bool:
    """`train.data_parallel: false` in a group of several workers."""
    return world > 1 and not candidate["config"]["train"].get("data_parallel", True)


def trains_alone(candidate: dict, in_memory: dict | None, world: int) -> bool:
    """`asks_alone`, with its splits handed over whole (small materialised data, `cache_data`);
    otherwise it trains data-parallel like the rest."""
    handed = in_memory or {}
    return asks_alone(candidate, world) and all(key in handed for key in candidate["datasets"].values())


def schedule(candidates: list[dict], in_memory: dict | None, world: int) -> list[tuple[bool, list[dict]]]:
    """The group's candidates in order as (alone, candidates) parts: each data-parallel candidate on its
    own, and each run of consecutive candidates that train alone as one pool."""
    parts: list[tuple[bool, list[dict]]] = []
    for candidate in candidates:
        alone = trains_alone(candidate, in_memory, world)
        if alone and parts and parts[-1][0]:
            parts[-1][1].append(candidate)
        else:
            parts.append((alone, [candidate]))
    return parts


def train_pool(pool: list[dict], in_memory: dict, part: int, world: int) -> None:
    """Every worker takes the pool's next candidate whenever it is free (a counter in the process
    group's store), so small models of unequal cost keep both workers busy; then waits for the others.
    A candidate's model does not depend on which worker trains it (its seed and data are its own)."""
    import torch.distributed as dist

    store = dist.distributed_c10d._get_default_store()
    claims, done = f"pipeline/pool{part}/next", f"pipeline/pool{part}/done"
    while (i := store.add(claims, 1) - 1) < len(pool):
        if not finished(pool[i]):
            run_training(pool[i], AloneSession(in_memory, pool[i], world))
    store.add(done, 1)
    while store.add(done, 0) < world:  # polled, not a collective: no time-out however long the others take
        time.sleep(0.05)


def train_candidates_per_worker(group: dict[str, Any]) -> None:
    """Ray Train's entry point for a task's model candidates: each in turn on the same workers, so the
    worker group starts once (seconds per start) instead of once per candidate; candidates that train
    alone (`trains_alone`) side by side, one per worker. After a restart, candidates with a complete
    model folder are done; the one the latest checkpoint names resumes from it, one that trains alone
    from its own latest epoch, the rest start fresh."""
    import ray.train

    from pipeline.train.checkpoint import checkpoint_json

    in_memory = group.get("in_memory")
    context = ray.train.get_context()
    world = context.get_world_size()
    for candidate in group["candidates"]:
        if asks_alone(candidate, world) and context.get_world_rank() == 0 and not trains_alone(candidate, in_memory, world):
            print(f"[{candidate['label']}] trains data-parallel: train.data_parallel false needs its splits handed to "
                  "the workers whole (train.cache_data, materialised and small)", flush=True)
    resume = ray.train.get_checkpoint()
    current = checkpoint_json(resume, HISTORY_FILE).get("candidate") if resume else None
    for part, (alone, candidates) in enumerate(schedule(group["candidates"], in_memory, world)):
        if alone:
            train_pool(candidates, in_memory, part, world)
        elif not finished(candidates[0]):
            candidate = candidates[0]
            run_training(candidate, CandidateSession(in_memory, candidate, resume if candidate["name"] == current else None))


def run_training(loop_config: dict[str, Any], session) -> None:
    loop_started_at = time.time()  # wall clock: the driver compares it with its own to time the worker start-up
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
    model = task.build_model(cfg, load_preprocessor(prep_state))
    channels_last = gpu_layout(model, device)
    model = session.prepare_model(model)
    if tc.compile:  # after the DDP wrap, as PyTorch recommends; checkpoints save the plain module
        model = torch.compile(model)
    optimizer = make_optimizer(model.parameters(), tc)

    # best/stale drive early stopping (with min_delta); ranked: the epochs a session keeps models of
    # (`rank_epoch`); done: the last epoch ran or it stopped early.
    state: dict[str, Any] = {"epoch": 0, "best": float("nan"), "stale": 0, "ranked": [], "done": False, "history": [],
                             "resumed_from": [], "worker_nodes": [], "loop_started_at": []}
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
    state["loop_started_at"].append(loop_started_at)

    use_amp = tc.amp
    precision = amp_dtype(device, tc.amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and precision == torch.float16)
    autocast = lambda: torch.autocast(device_type=device.type, dtype=precision, enabled=use_amp)  # noqa: E731
    train_rows = int(loop_config["train_rows"])
    data_world = world * len(session.data_ranks)  # the data-parallel ranks in all
    steps_per_epoch = max(1, train_rows // data_world // tc.batch_size)
    drop_last = train_rows // data_world > tc.batch_size
    train_data = [ShardData(shard, device, tc.cache_data, tc.shuffle_buffer, cfg.seed + r, channels_last)
                  for r, shard in zip(session.data_ranks, session.shards("train"))]
    val_data = [ShardData(shard, device, tc.cache_data, 0, cfg.seed, channels_last) for shard in session.shards("val")]
    norms = running_norms(model) if len(train_data) > 1 else []  # once, not per step
    model_files = (json_bytes(prep_state), json_bytes(loop_config["config"])) if rank == 0 else None  # once, not per epoch

    for epoch in range(state["epoch"], 0 if state["done"] else tc.epochs):
        started = time.perf_counter()
        streams = RankStreams(cfg.seed, epoch, session.data_ranks, device)
        ranks = lambda part: rank_context(streams, norms, part)  # noqa: E731
        model.train()
        loss_sums, rows = [torch.zeros((), device=device) for _ in train_data], 0  # on the device: no host sync per step
        lr = tc.lr
        for step, parts in enumerate(zip(*(d.batches(epoch, tc.batch_size, shuffle=True, drop_last=drop_last) for d in train_data))):
            lr = tc.lr * lr_factor(tc.schedule, epoch + min(step / steps_per_epoch, 1.0), tc.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for part, (loss, n) in enumerate(train_step(task, cfg, model, optimizer, parts, scaler, autocast, ranks)):
                loss_sums[part] += loss * n
                rows += n

        model.eval()
        val_sums: dict[str, float] = {}
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=precision, enabled=use_amp):
            for data in val_data:  # summed per data rank, then added as the all-reduce adds them
                part_sums: dict[str, Any] = {}
                for batch in data.batches(epoch, max(tc.batch_size, 256), shuffle=False):
                    for k, v in task.eval_sums(task.forward(model, batch), batch).items():
                        part_sums[k] = part_sums.get(k, 0.0) + v
                for k, v in part_sums.items():
                    val_sums[k] = val_sums.get(k, 0.0) + float(v)
        sums = {"train_loss_sum": sum(float(x) for x in loss_sums), "train_rows": float(rows), **val_sums}
        totals = all_reduce_sums(sums, world)
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
        state["done"] = stop or epoch + 1 == tc.epochs
        before = {e for _, e in state["ranked"]}
        state["ranked"] = rank_epoch(state["ranked"], metrics[tc.metric], epoch + 1, tc.mode, tc.checkpoints_to_keep)
        ranked = {e for _, e in state["ranked"]}
        state["history"].append(dict(metrics))

        if rank == 0:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "stopped_early"))
            print(f"[{label}] epoch {epoch + 1}/{tc.epochs}  {shown}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                save_model_dir(tmp, model, *model_files)
                save_train_state(tmp, {"optimizer": optimizer.state_dict(), **state})
                write_json(os.path.join(tmp, HISTORY_FILE), history_record(state, loop_config.get("name"), tc.mode))
                session.report(metrics, tmp, ranks=(epoch + 1 in ranked, sorted(before - ranked)))
        else:
            session.report(metrics, None)
        if stop:
            if rank == 0:
                print(f"[{label}] early stopping: no {tc.metric} improvement for {state['stale']} epochs", flush=True)
            break
    if rank == 0:
        session.finish(history_record(state, loop_config.get("name"), tc.mode))


def rank_epoch(ranked: list, value: float, epoch: int, mode: str, keep: int) -> list:
    """The epochs whose models are kept, as [value, epoch] pairs, after `epoch` reported `value`: Ray
    Train's checkpoint ranking, so that a run picks the same best epoch whether Ray Train or the loop
    keeps its checkpoints. Ascending by value (NaN lowest), an epoch after earlier ones of equal value;
    beyond `keep`, the lowest go, except the latest. `best_epoch` picks from them."""
    def score(v: float) -> tuple:
        return (not math.isnan(v), v if mode == "max" else -v)

    at = 0
    while at < len(ranked) and not score(ranked[at][0]) > score(value):
        at += 1
    ranked = [*ranked[:at], [value, epoch], *ranked[at:]]
    return [r for i, r in enumerate(ranked) if i >= len(ranked) - keep or r[1] == epoch]


def best_epoch(ranked: list, mode: str) -> int:
    """The best of the ranked epochs as Ray Train's `get_best_checkpoint` picks it: the first of the
    highest (lowest for `min`) values, so among equal values the earliest still kept; NaN only when
    every value is NaN."""
    pick = max if mode == "max" else min
    numbers = [r for r in ranked if not math.isnan(r[0])] or ranked
    return pick(numbers, key=lambda r: r[0])[1] if numbers else 0


def history_record(state: dict[str, Any], candidate: str | None, mode: str) -> dict[str, Any]:
    """history.json: every epoch's metrics so far, the best epoch, and when and where the loop ran."""
    return ({k: state[k] for k in ("resumed_from", "worker_nodes", "loop_started_at")}
            | {"epochs": state["history"], "best_epoch": best_epoch(state["ranked"], mode), "reported_at": time.time(),
               "candidate": candidate})
