"""The pipeline flow shared by `pipeline run`, `pipeline data`, `pipeline demo`, `pipeline tune` and the jobs:
ingest -> clean -> split -> features -> train -> evaluate -> register.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.data.clean import CleanResult, clean_dataset, null_statistic, streaming_reason, sum_partials, value_counts
from pipeline.data.label import VOTE_PREFIX, labeling_partial, labeling_stats
from pipeline.data.report import format_report, write_report
from pipeline.data.rules import infer_datetime_formats
from pipeline.data.schema import dataset_columns
from pipeline.data.split import SPLITS, split_dataset
from pipeline.errors import DataError
from pipeline.evaluate import evaluate_model
from pipeline.registry import Registry, check_name
from pipeline.tasks import get_task
from pipeline.tasks.base import Task
from pipeline.timing import Stopwatch, Timings

Log = Callable[[str], None]


def new_run_id(task: str) -> str:
    return f"{task}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass
class PreparedData:
    splits: dict[str, Any]  # cleaned raw rows per split (Ray Datasets)
    clean: CleanResult
    report: dict[str, Any]
    kept: Any = None  # every cleaned row, for candidates that split differently


def redacting(log: Log) -> Log:
    """`log` with credentials in URIs replaced by `***`."""
    return log if getattr(log, "redacts", False) else _Redacting(log)


class _Redacting:
    redacts = True

    def __init__(self, log: Log):
        self.log = log

    def __call__(self, message: str) -> None:
        self.log(storage.redact(message))


def prepare_data(task: Task, cfg: PipelineConfig, output_dir: str, log: Log = print,
                 timings: Timings | None = None) -> PreparedData:
    """ingest -> clean (type coercion, rules, labeling, de-duplication) -> split, with the data report
    (written, with the quarantine, to `output_dir`: any storage URI)."""
    log = redacting(log)
    storage.make_dirs(output_dir)
    watch = Stopwatch(log, task.name, timings)
    ds = task.read(cfg)
    watch.lap("ingest", f"{cfg.data.source}" + (f" (+ test: {cfg.data.test_source})" if cfg.data.test_source else ""))
    formats = infer_datetime_formats(ds, cfg.data) if cfg.data.columns else {}
    if formats != cfg.data.datetime_formats:  # decided once per column, for every block alike
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"datetime_formats": formats})})

    lf_names, columns = cfg.data.labeling.names, list(cfg.data.columns)
    statistics = {"nulls": null_statistic(columns)} if columns else {}
    if lf_names:
        statistics["labeling"] = ([VOTE_PREFIX + n for n in lf_names], lambda b: labeling_partial(b, lf_names))
    streaming = streaming_reason(cfg.data)
    clean = clean_dataset(ds, task.checks(cfg), task.batch_format, cfg.data.dedup or None, statistics, materialize=not streaming,
                          quarantine_uri=storage.join(output_dir, "quarantine"))
    report: dict[str, Any] = {"task": task.name, "source": storage.redact(cfg.data.source), **clean.summary()}
    if formats:
        report["datetime_formats"] = formats
    if columns:
        report["nulls"] = sum_partials(clean.statistics["nulls"], columns)
    if lf_names:
        report["labeling"] = labeling_stats(clean.statistics["labeling"], lf_names)
    kept = clean.kept.drop_columns([VOTE_PREFIX + n for n in lf_names]) if lf_names else clean.kept
    quarantine_path = clean.quarantine_path
    report["quarantine_path"] = storage.redact(quarantine_path)
    watch.lap("clean", f"kept {clean.rows_kept:,} of {clean.rows_in:,} rows, quarantined {clean.rows_quarantined:,}"
              + (f" (streamed, {streaming}: the split reads and cleans the source again, then holds its rows in Ray's "
                 "object store)" if streaming else ""))
    if clean.rows_kept == 0:
        raise DataError(f"no rows left after cleaning {cfg.data.source} (quarantined by reason: {clean.reasons}); "
                        f"see {quarantine_path} and fix the data or the task's data options")

    columns = dataset_columns(kept)
    missing = [c for c in task.required_columns(cfg) if c not in columns]
    if missing:
        shown = ", ".join(c for c in columns if not c.startswith("_"))
        hint = ("; name the label column with --set data.labeling.target=COLUMN, or derive it with labeling functions "
                "(data.labeling)") if cfg.data.labeling.target in missing else ""
        raise DataError(f"{cfg.data.source} has no column {', '.join(map(repr, missing))} (its columns: {shown}){hint}")
    splits = split_dataset(kept, cfg.data.split, cfg.seed)
    counts = {name: splits[name].count() for name in SPLITS}
    watch.lap("split", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    report["splits"] = counts
    label = cfg.data.labeling.target
    if label in columns:
        report["class_balance"] = {name: dict(sorted(value_counts(splits[name], label).items())) for name in SPLITS if counts[name]}
    write_report(report, output_dir)
    log(format_report(report))
    return PreparedData(splits, clean, report, kept)


def featurize(task: Task, cfg: PipelineConfig, splits: dict, log: Log = print, timings: Timings | None = None):
    """Fits the preprocessor on train only, then transforms train and val for training."""
    started = time.perf_counter()
    preprocessor = task.fit_preprocessor(cfg, splits)
    features = {
        name: splits[name].map_batches(preprocessor.transform_for(name), batch_format=task.batch_format).materialize()
        for name in ("train", "val")
    }
    seconds = time.perf_counter() - started
    if timings:
        timings.add("features", seconds)
    log(f"[{task.name}] features: fitted on train only ({seconds:.1f}s)")
    return preprocessor, features


class SplitCache:
    """Splits and fitted features per split configuration, so candidates sharing one reuse them."""

    def __init__(self, task: Task, prepared: PreparedData, cfg: PipelineConfig, log: Log, timings: Timings | None = None):
        self.task, self.prepared, self.log, self.timings = task, prepared, log, timings or Timings()
        self.splits = {repr(cfg.data.split): prepared.splits}
        self.features: dict[str, tuple] = {}

    def get(self, cfg: PipelineConfig) -> dict:
        key = repr(cfg.data.split)
        if key not in self.splits:
            self.splits[key] = split_dataset(self.prepared.kept, cfg.data.split, cfg.seed)
        return self.splits[key]

    def featurized(self, cfg: PipelineConfig) -> tuple:
        key = repr(cfg.data.split)
        if key not in self.features:
            self.features[key] = featurize(self.task, cfg, self.get(cfg), self.log, self.timings)
        return self.features[key]


def feature_arrays(ds, max_rows: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """A materialised dataset's columns as NumPy arrays in the driver; past `max_rows` rows, a seeded
    sample of about that many (each row kept with the same chance), taken batch by batch as they come."""
    from pipeline.data.local import local_batches

    batches = local_batches(ds, "numpy")
    if batches is None:
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
    rows = ds.count() if max_rows else 0
    share, rng = (max_rows / rows if max_rows and rows > max_rows else 1.0), np.random.default_rng(seed)

    def kept(batch):
        if share == 1.0:
            return batch
        chosen = rng.random(len(next(iter(batch.values())))) < share
        return {k: v[chosen] for k, v in batch.items()}

    batches = [b for b in map(kept, batches) if len(next(iter(b.values()), []))]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]} if batches else {}


class GatheredFeatures(dict):
    """A baseline's view of the splits' features: each split's gathered into the driver when first asked
    for (none of them gathers test; the recommender's none at all), train sampled down to `train_rows`."""

    def __init__(self, splits: dict, train_rows: int | None, seed: int):
        super().__init__()
        self.splits, self.train_rows, self.seed = splits, train_rows, seed

    def __missing__(self, name: str) -> dict[str, np.ndarray]:
        self[name] = feature_arrays(self.splits[name], self.train_rows if name == "train" else None, self.seed)
        return self[name]


def fit_baseline(task: Task, cfg: PipelineConfig, cache: SplitCache, model_dir: str, label: str, log: Log) -> dict[str, Any]:
    """Fits a baseline candidate in the driver on its split's features and writes its model folder (the
    layout a trained candidate's has) to `model_dir`. Returns its `train` record for metrics.json."""
    import tempfile

    from pipeline.train.checkpoint import save_model_dir

    started = time.perf_counter()
    preprocessor, features = cache.featurized(cfg)
    model, chosen = task.fit_baseline(cfg, preprocessor, GatheredFeatures(features, task.baseline_rows(cfg), cfg.seed))
    with tempfile.TemporaryDirectory() as tmp:
        save_model_dir(tmp, model, preprocessor.state(), cfg.to_dict())
        storage.copy_dir(tmp, model_dir)
    seconds = time.perf_counter() - started
    cache.timings.add("baselines", seconds)
    shown = ", ".join(f"{k}={v}" for k, v in chosen.items())
    log(f"[{label}] baseline {cfg.model.arch} fitted in {seconds:.1f}s{f' ({shown})' if shown else ''}")
    return {"baseline": True, "fit_seconds": round(seconds, 2), "fit": chosen}


def fit_and_evaluate_baseline(task: Task, cfg: PipelineConfig, cache: SplitCache, train_dir: str, label: str, log: Log) -> dict:
    """A baseline candidate fitted (its model folder: `train_dir`/model) and scored on val and test."""
    model_dir = storage.join(train_dir, "model")
    train = fit_baseline(task, cfg, cache, model_dir, label, log)
    with cache.timings.measure("evaluation"):
        evaluated = evaluate_model(task, model_dir, cache.get(cfg), train_dir)
    return {**evaluated, "model_dir": model_dir, "train_dir": train_dir, "train": train}


def merged_baselines(*parts: dict[str, dict]) -> dict[str, dict]:
    """Baselines by name, the metrics of every part merged (the first value of a metric wins)."""
    out: dict[str, dict] = {}
    for part in parts:
        for name, scores in part.items():
            out.setdefault(name, {})
            for metric, value in scores.items():
                out[name].setdefault(metric, value)
    return out


def baseline_metrics(task: Task, cfgs: dict[str, PipelineConfig], results: dict[str, dict]) -> dict[str, dict]:
    """metrics.json's `baselines`: each baseline candidate's test metrics (scalars) under its `model.arch`."""
    out: dict[str, dict] = {}
    for name, result in results.items():
        if task.is_baseline(cfgs[name]):
            scores = {k: v for k, v in result["test"].items() if isinstance(v, (int, float))}
            out = merged_baselines(out, {cfgs[name].model.arch: scores})
    return out


def run_metrics(task: Task, run_id: str, summary: dict, prepared: PreparedData, baselines: dict, served: str, train: dict,
                started: float, output_dir: str, timings: Timings | None = None, **extra) -> dict[str, Any]:
    """metrics.json, one shape for `pipeline run` and `pipeline tune` (which adds `tune`; a run with
    several candidates adds `candidates`)."""
    data_keys = ("rows_in", "rows_kept", "rows_quarantined", "quarantined_by_reason", "splits")
    return {
        "task": task.name, "run_id": run_id, "test": summary["test"], "val": summary["val"],
        "data": {k: prepared.report[k] for k in data_keys},
        "baselines": merged_baselines(baselines, summary.get("baselines", {})),
        "served_model": served, "train": train, **extra,
        "wall_seconds": round(time.perf_counter() - started - (timings.away_seconds if timings else 0.0), 1), "output_dir": output_dir,
        **({"timings": timings.as_dict()} if timings else {}),
    }


def register(task: Task, run_id: str, model_dir: str, metrics: dict, registry: Registry, promote: bool, log: Log) -> str:
    """Writes metrics.json beside the run and into the model, registers the model, promotes it if asked."""
    storage.write_json(storage.join(metrics["output_dir"], "metrics.json"), metrics)
    storage.write_json(storage.join(model_dir, "metrics.json"), metrics)
    uri = registry.register(task.name, run_id, model_dir, metrics)
    if promote:
        registry.promote(task.name, run_id)
    log(f"[{task.name}] registered {uri}{' and promoted to production' if promote else ''} (served model: {metrics['served_model']})")
    log(f"[{task.name}] test " + "  ".join(f"{k}={v:.4f}" for k, v in metrics["test"].items() if isinstance(v, float)))
    return uri


@dataclass
class RunPlan:
    """A run prepared up to training: its data stages done, its splits featurised and its trained candidates
    planned (`planned`, for `fit_candidates`). `finish_run` evaluates, selects and registers."""

    task: Task
    cfg: PipelineConfig
    run_id: str
    output_dir: str
    registry: Registry
    promote: bool
    log: Log
    timings: Timings
    started: float
    prepared: PreparedData
    cache: SplitCache
    candidates: dict[str, PipelineConfig]
    train_dirs: dict[str, str]
    labels: dict[str, str]
    model_dirs: dict[str, str]
    planned: list  # of trainer.Candidate, in `candidates` order
    mlflow_uri: str | None = None


def run_pipeline(cfg: PipelineConfig, output_dir: str, registry: Registry | None = None, promote: bool = True,
                 run_id: str | None = None, log: Log = print, timings: Timings | None = None,
                 mlflow_uri: str | None = None) -> dict[str, Any]:
    """Data stages, training of every model candidate, evaluation, selection and registration.

    `output_dir` is any storage URI (a local path, s3://...): every artifact of the run lands there, Ray
    Train's checkpoints under `checkpoints/`. Returns the metrics.json contents. With several candidates, the one with the best validation
    score (the task's selection metric, or `candidates.select` when it names one) is registered. Ends with the
    timing summary (`timings`: pass the caller's to count what it did before, e.g. Ray's start-up). With
    `mlflow_uri` the run is logged to MLflow too (`pipeline.tracking`), and a promotion mirrored there.
    """
    from pipeline.train.trainer import fit_candidates

    plan = plan_run(cfg, output_dir, registry, promote, run_id, log, timings, mlflow_uri)
    fitted = fit_candidates(plan.planned, storage.join(plan.output_dir, "checkpoints"), plan.run_id) if plan.planned else None
    for phase, seconds in (fitted.phases if fitted else {}).items():
        plan.timings.add(phase, seconds)
    return finish_run(plan, fitted.outcomes if fitted else {})


def plan_run(cfg: PipelineConfig, output_dir: str, registry: Registry | None = None, promote: bool = True,
             run_id: str | None = None, log: Log = print, timings: Timings | None = None,
             mlflow_uri: str | None = None) -> RunPlan:
    """`run_pipeline` up to training: data stages, features, and the trained candidates to fit."""
    from pipeline.runtime import resources_note
    from pipeline.train.trainer import Candidate

    started = time.perf_counter()
    timings = timings or Timings()
    log = redacting(log)
    task = get_task(cfg.task)
    output_dir = storage.resolve(output_dir)
    run_id = check_name(run_id) if run_id else new_run_id(task.name)
    registry = registry or Registry()
    registry.check_new(task.name, run_id)  # before any work: registered runs are never overwritten
    prepared = prepare_data(task, cfg, output_dir, log, timings)
    counts = prepared.report["splits"]
    if counts["train"] == 0 or counts["val"] == 0 or counts["test"] == 0:
        raise DataError(f"too few rows to train and evaluate ({counts}); every split needs at least one row")
    cache = SplitCache(task, prepared, cfg, log, timings)
    candidates = dict(cfg.candidate_configs())
    several = len(candidates) > 1
    train_dirs = {name: storage.join(output_dir, "candidates", name) if several else output_dir for name in candidates}
    labels = {name: f"{task.name}/{name}" if several else task.name for name in candidates}
    model_dirs = {name: storage.join(train_dirs[name], "model") for name in candidates}

    planned: list[Candidate] = []
    for name, ccfg in candidates.items():
        splits = cache.get(ccfg)
        preprocessor, features = cache.featurized(ccfg)
        if task.is_baseline(ccfg):
            continue
        tc = ccfg.train
        workers = (f"1 of {tc.num_workers} workers, standing in for all {tc.num_workers} ranks (data_parallel: false)"
                   if tc.num_workers > 1 and not tc.data_parallel else f"{tc.num_workers} worker(s)")
        log(f"[{labels[name]}] training {run_id}: {workers}{' with GPU' if tc.use_gpu else ''}, "
            f"{tc.epochs} epochs, {tc.optimizer} lr={tc.lr:g} schedule={tc.schedule.name}")
        note = resources_note(tc.num_workers, tc.cpus_per_worker, 1 if tc.use_gpu else 0)
        if note:
            log(f"[{labels[name]}] warning: {note}")
        train_rows = counts["train"] if splits is prepared.splits else splits["train"].count()
        planned.append(Candidate(name, ccfg, features, preprocessor.state(), train_rows, labels[name], model_dirs[name]))
    return RunPlan(task, cfg, run_id, output_dir, registry, promote, log, timings, started, prepared, cache, candidates,
                   train_dirs, labels, model_dirs, planned, mlflow_uri)


def finish_run(plan: RunPlan, outcomes: dict) -> dict[str, Any]:
    """`run_pipeline` after training: evaluation of every candidate (`outcomes`: the trained ones'
    `TrainOutcome` by candidate name), baselines, selection, registration and the timing summary."""
    from pipeline.plots import learning_curves_png

    task, cfg, run_id, output_dir, log, timings = plan.task, plan.cfg, plan.run_id, plan.output_dir, plan.log, plan.timings
    candidates, train_dirs, labels, model_dirs, cache = plan.candidates, plan.train_dirs, plan.labels, plan.model_dirs, plan.cache
    several = len(candidates) > 1
    results: dict[str, dict[str, Any]] = {}
    for name, ccfg in candidates.items():
        tc, train_dir = ccfg.train, train_dirs[name]
        if task.is_baseline(ccfg):
            results[name] = fit_and_evaluate_baseline(task, ccfg, cache, train_dir, labels[name], log)
            track(results[name], train_dir, timings)
            continue
        outcome = outcomes[name]
        with timings.measure("registration"):  # the learning curves
            learning_curves_png(outcome.history, storage.join(train_dir, "learning_curves.png"), tc.metric, f"{labels[name]}: {run_id}")
        log(f"[{labels[name]}] best checkpoint: epoch {outcome.best_metrics.get('epoch')} with "
            f"{tc.metric}={outcome.best_metrics.get(tc.metric, float('nan')):.4f}")
        with timings.measure("evaluation"):
            evaluated = evaluate_model(task, model_dirs[name], cache.get(ccfg), train_dir)
        results[name] = {**evaluated, "model_dir": model_dirs[name], "train_dir": train_dir, "train": {
            "epochs_run": len(outcome.history),
            "best_epoch": outcome.best_metrics.get("epoch"),
            "stopped_early": bool(outcome.history and outcome.history[-1].get("stopped_early")),
            "resumed_from_epochs": outcome.resumed_from,
            "worker_nodes": outcome.worker_nodes,
            "history": outcome.history,
            "num_workers": tc.num_workers,
            "use_gpu": tc.use_gpu,
        }}
        track(results[name], train_dir, timings)
    log(f"[{task.name}] TensorBoard: tensorboard --logdir {storage.join(output_dir, 'candidates') if several else storage.join(output_dir, 'tensorboard')}")

    served = select_candidate(task, cfg, results)
    chosen = results[served]
    model_dir = storage.join(output_dir, "model")
    if chosen["model_dir"] != model_dir:
        storage.copy_dir(chosen["model_dir"], model_dir)
        for png in ("confusion_matrix.png", "learning_curves.png"):
            if storage.exists(storage.join(chosen["train_dir"], png)):
                storage.copy_file(storage.join(chosen["train_dir"], png), storage.join(output_dir, png))
    extra = {"candidates": candidate_table(task, candidates, results)} if several else {}
    metrics = run_metrics(task, run_id, task.summarize(results, served), plan.prepared, baseline_metrics(task, candidates, results),
                          served, chosen["train"], plan.started, output_dir, timings, **extra)
    mlflow_uri = plan.mlflow_uri
    if mlflow_uri:
        from pipeline.tracking import log_mlflow_run

        with timings.measure("registration"):
            metrics["mlflow"] = log_mlflow_run(mlflow_uri, task.name, metrics, candidates[served].to_dict(), model_dir, output_dir)
        log(f"[{task.name}] MLflow: run {metrics['mlflow']['run_id']} at {metrics['mlflow']['tracking_uri']}, "
            f"model {metrics['mlflow']['registered_model']} version {metrics['mlflow']['version']}")
    with timings.measure("registration"):
        register(task, run_id, model_dir, metrics, plan.registry, plan.promote, log)
        if mlflow_uri and plan.promote:
            from pipeline.tracking import mirror_production

            mirror_production(mlflow_uri, task.name, run_id)
    log(timings.summary(f"{task.name} {run_id}"))
    return metrics


def track(result: dict[str, Any], train_dir: str, timings: Timings) -> None:
    """The candidate's TensorBoard events (`train_dir`/tensorboard): its epochs, held-out metrics, confusion matrix."""
    from pipeline.tracking import write_events

    with timings.measure("registration"):
        write_events(storage.join(train_dir, "tensorboard"), result["train"].get("history", []),
                     {k: result[k] for k in ("val", "test")}, storage.join(train_dir, "confusion_matrix.png"))


def candidate_table(task: Task, cfgs: dict[str, PipelineConfig], results: dict[str, dict]) -> dict[str, dict]:
    """metrics.json's `candidates`: each one's kind (trained or baseline), validation and test metrics."""
    return {name: {"kind": "baseline" if task.is_baseline(cfgs[name]) else "trained", "arch": getattr(cfgs[name].model, "arch", None),
                   "val": r["val"], "test": r["test"]} for name, r in results.items()}


def select_candidate(task: Task, cfg: PipelineConfig, results: dict) -> str:
    """`candidates.select` if it names a candidate, else the best validation score among candidates that have it."""
    wanted = cfg.candidates.select
    if wanted != "best_val":
        return wanted
    metric, mode = task.selection
    scored = {name: r["val"][metric] for name, r in results.items() if metric in r.get("val", {})}
    if not scored:
        return next(iter(results))
    pick = max if mode == "max" else min
    return pick(scored, key=scored.get)
