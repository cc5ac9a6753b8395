"""Driver side of training: one Ray Train `TorchTrainer` run over the prepared datasets."""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.data.local import local_blocks
from pipeline.train.checkpoint import HISTORY_FILE
from pipeline.train.loop import train_loop_per_worker


@dataclass
class Candidate:
    """One model to train: its config, its featurised splits ({"train", "val"}: candidates that share a
    split share the objects), and the storage URI its best epoch's model folder goes to."""

    name: str
    cfg: PipelineConfig
    datasets: dict
    preprocessor_state: dict
    train_rows: int
    label: str  # how its log lines are prefixed
    model_dir: str


@dataclass
class TrainOutcome:
    best_metrics: dict[str, Any]  # the best epoch's (its model folder is the candidate's `model_dir`)
    history: list[dict[str, Any]]  # one entry per epoch, across restarts
    resumed_from: list[int]  # epochs after which training resumed from a checkpoint
    worker_nodes: list[list[str]]  # per (re)start of the worker group: the Ray node id of each rank
    started_at: float | None = None  # wall clock: its loop's (last) start in this fit, and its last report
    ended_at: float | None = None


@dataclass
class GroupFit:
    outcomes: dict[str, TrainOutcome]  # by candidate name
    phases: dict[str, float] = field(default_factory=dict)  # train_startup, training, train_shutdown (seconds)


def loop_config(cfg: PipelineConfig, preprocessor_state: dict, train_rows: int, label: str) -> dict[str, Any]:
    """What every training worker (or Tune trial) receives: plain JSON-able values."""
    return {"config": cfg.to_dict(), "preprocessor": preprocessor_state, "train_rows": train_rows, "label": label}


IN_MEMORY_BYTES = 256 * 2**20  # materialised splits up to this size (all together) skip Train's streaming split


def equal_split_ranges(block_rows: list[int], world: int) -> list[list[tuple[int, int]]]:
    """The rows `[start, stop)` of a split (its blocks concatenated in order) that each of `world` ranks
    receives from Ray Data's equal streaming split of blocks with these row counts, the one Ray Train
    runs (`streaming_split(world, equal=True)`, with preserve_order, which turns locality hints off): a
    mirror of ray.data's OutputSplitter. Each arriving block goes whole to the rank with the fewest rows
    so far while what is still buffered can even the ranks out; at the end the buffer is cut so that
    every rank has the same count (a cut's tail queues behind the rest) and fewer than `world` rows are
    left out. It depends on the blocks' row counts only, so it is deterministic; a test holds it to the
    real split."""
    from collections import deque

    buffer: deque[tuple[int, int]] = deque()
    buffered, offset = 0, 0
    counts = [0] * world
    ranges: list[list[tuple[int, int]]] = [[] for _ in range(world)]
    for rows in block_rows:
        buffer.append((offset, offset + rows))
        buffered, offset = buffered + rows, offset + rows
        while buffer:  # dispatch what can go now
            rank = min(range(world), key=counts.__getitem__)
            start, stop = buffer[0]
            after = counts.copy()
            after[rank] += stop - start
            if buffered - (stop - start) < sum(max(after) - c for c in after):
                break
            buffer.popleft()
            buffered -= stop - start
            counts[rank] += stop - start
            ranges[rank].append((start, stop))
    if buffered:
        top = max(counts)
        even = (buffered - sum(top - c for c in counts)) // world
        for rank in range(world):
            want = top - counts[rank] + even
            while want > 0:
                start, stop = buffer.popleft()
                take = min(want, stop - start)
                ranges[rank].append((start, start + take))
                want -= take
                if start + take < stop:
                    buffer.append((start + take, stop))
    return ranges


def in_memory_datasets(datasets: dict, cache_data: bool, world: int, limit: int | None = None) -> dict | None:
    """Small materialised splits as one object-store reference each (a dict of NumPy columns) with the rows
    each rank keeps, or None.

    Ray Train's streaming split starts a coordinator actor per split and streams each shard through it:
    seconds of fixed cost per run, against milliseconds to hand a few MiB to every worker whole (workers
    keep their rows; `loop.InMemoryShard`). Each rank keeps exactly the rows the streaming split would
    give it (`equal_split_ranges`), so runs have the same shards and metrics either way. Larger or lazy
    data, or `cache_data: false`, streams."""
    import numpy as np
    import ray
    from ray.data.block import BlockAccessor
    from ray.data.dataset import MaterializedDataset

    if not cache_data or not all(isinstance(ds, MaterializedDataset) for ds in datasets.values()):
        return None
    if sum(ds.size_bytes() for ds in datasets.values()) > (IN_MEMORY_BYTES if limit is None else limit):
        return None
    handed = {}
    for name, ds in datasets.items():
        # In the order the streaming split takes them in, one by one (a materialised bundle may hold several).
        accessors = [BlockAccessor.for_block(block) for block in local_blocks(ds, limit=math.inf)]
        blocks = [block.to_numpy() for block in accessors if block.num_rows()]  # an empty block may lack the columns
        if not blocks:
            return None
        # One block: it is the split, no concatenation copy.
        rows = blocks[0] if len(blocks) == 1 else {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
        handed[name] = {"rows": ray.put(rows), "ranges": equal_split_ranges([block.num_rows() for block in accessors], world)}
    return handed


def build_trainer(cfg: PipelineConfig, datasets: dict, loop: dict[str, Any], storage_path: str, name: str,
                  callbacks: list | None = None, entry=train_loop_per_worker, rank_by_metric: bool = True):
    """A TorchTrainer running `entry` with `cfg.train`'s workers. `rank_by_metric`: Ray Train keeps the
    best checkpoints by `train.metric` (one model per run); otherwise the latest (the loop keeps the best)."""
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    storage_path, storage_filesystem = storage.ray_storage(storage_path)
    in_memory = in_memory_datasets(datasets, tc.cache_data, tc.num_workers)
    if in_memory:
        loop, datasets = {**loop, "in_memory": in_memory}, None
    # Plain prints from the workers (one line per epoch), instead of Train re-logging each one.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Each report waits for the controller's poll (2 s by default): with a checkpoint per epoch on
    # small data that wait would dominate the run time.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    ranking = {"checkpoint_score_attribute": tc.metric, "checkpoint_score_order": tc.mode} if rank_by_metric else {}
    return TorchTrainer(
        entry,
        train_loop_config=loop,
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker={"CPU": tc.cpus_per_worker}),
        datasets=datasets,
        # preserve_order makes shard contents, and with the seed the whole run, reproducible.
        dataset_config=DataConfig(datasets_to_split="all", execution_options=ExecutionOptions(preserve_order=True)),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=tc.checkpoints_to_keep, **ranking),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level=os.environ.get("PIPELINE_TRAIN_LOG_LEVEL", "WARNING")),
        ),
    )


GROUP_SETTINGS = ("num_workers", "use_gpu", "cpus_per_worker", "max_failures", "checkpoints_to_keep", "cache_data")


def fit_candidates(candidates: list[Candidate], storage_path: str, name: str) -> GroupFit:
    """Trains every candidate, resuming a run called `name` that has checkpoints in `storage_path`.

    Consecutive candidates with the same worker settings (`GROUP_SETTINGS`) train in one Ray Train run,
    in turn on the same workers: a worker group's start costs seconds (processes, torch imports, the
    process group), which one start per task instead of one per candidate saves. Each candidate's best
    model folder is written to its `model_dir` by the loop."""
    def settings(candidate: Candidate) -> tuple:
        return tuple(getattr(candidate.cfg.train, k) for k in GROUP_SETTINGS)

    groups = [list(group) for _, group in itertools.groupby(candidates, key=settings)]  # consecutive runs alike
    fitted = GroupFit({})
    for group in groups:
        # One folder per group: a candidate name may hold "/" (the demo's are "task/candidate").
        part = fit_group(group, storage_path, name if len(groups) == 1 else f"{name}-{group[0].name}".replace("/", "-"))
        fitted.outcomes.update(part.outcomes)
        for phase, seconds in part.phases.items():
            fitted.phases[phase] = fitted.phases.get(phase, 0.0) + seconds
    return fitted


def fit_group(candidates: list[Candidate], storage_path: str, name: str) -> GroupFit:
    from pipeline.train.loop import train_candidates_per_worker

    datasets: dict[str, Any] = {}  # each distinct dataset once, as Train's `datasets` (split or handed whole)
    keys_by_id: dict[int, str] = {}
    loops = []
    for candidate in candidates:
        keys = {}
        for split, ds in candidate.datasets.items():
            if id(ds) not in keys_by_id:
                keys_by_id[id(ds)] = f"{split}_{len(keys_by_id)}"
                datasets[keys_by_id[id(ds)]] = ds
            keys[split] = keys_by_id[id(ds)]
        loops.append({**loop_config(candidate.cfg, candidate.preprocessor_state, candidate.train_rows, candidate.label),
                      "name": candidate.name, "model_dir": candidate.model_dir, "datasets": keys})
    trainer = build_trainer(candidates[0].cfg, datasets, {"candidates": loops}, storage_path, name,
                            entry=train_candidates_per_worker, rank_by_metric=False)
    fit_started = time.time()
    result = trainer.fit()
    fit_ended = time.time()
    if result.error:
        raise result.error
    outcomes, histories = {}, []
    for candidate in candidates:
        history = storage.read_json(storage.join(candidate.model_dir, HISTORY_FILE))
        histories.append(history)
        best = [e for e in history["epochs"] if e.get("epoch") == history.get("best_epoch")]
        starts = [t for t in history.get("loop_started_at", []) if t >= fit_started]
        outcomes[candidate.name] = TrainOutcome(best[-1] if best else {}, history["epochs"], history["resumed_from"],
                                                history.get("worker_nodes", []), min(starts, default=None), history.get("reported_at"))
    # The first loop start and the last report of any candidate (those that train alone run side by side).
    starts = sorted(t for h in histories for t in h.get("loop_started_at", []))
    reports = [h["reported_at"] for h in histories if h.get("reported_at") is not None]
    return GroupFit(outcomes, train_phases(fit_started, starts, max(reports, default=None), fit_ended))


def train_phases(fit_started: float, loop_started_at: list[float], reported_at: float | None, fit_ended: float) -> dict[str, float]:
    """Splits `trainer.fit()`'s wall time at the first worker's loop start and at the last report: the
    wait for the worker group (placement group, processes, DDP set-up), training (restarts included), and
    Train's shutdown. Without the worker-side times (an older checkpoint), it is all training."""
    starts = [t for t in loop_started_at if t >= fit_started]  # a resumed run's history has earlier starts too
    if not starts or reported_at is None:
        return {"training": fit_ended - fit_started}
    first = min(starts[0], fit_ended)
    last = min(max(reported_at, first), fit_ended)
    return {"train_startup": first - fit_started, "training": last - first, "train_shutdown": fit_ended - last}


def training_span(outcomes: list[TrainOutcome]) -> float:
    """Seconds from the first of these candidates' loop start to the last one's last report: their share
    of a training run that trained others too (the demo trains every task's candidates in one)."""
    starts = [o.started_at for o in outcomes if o.started_at is not None]
    ends = [o.ended_at for o in outcomes if o.ended_at is not None]
    return max(0.0, max(ends) - min(starts)) if starts and ends else 0.0
