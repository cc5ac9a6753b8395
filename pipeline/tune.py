"""`pipeline tune TASK`: learning-rate and schedule sweeps with Ray Tune over the one training loop.

The data stages run once in the driver; every trial trains with `pipeline.train.loop` on the same
prepared datasets: in the trial's own process (`TuneSession`, one worker: ASHA can stop it, PBT can
clone its checkpoint and perturb its learning rate) or, with `--workers-per-trial N`, as a
multi-worker Ray Train run whose reports reach Tune through `TuneReportCallback`.

Outputs in --output: results.csv (one row per trial), best_config.yaml (usable with
`pipeline run TASK --config`), lr_vs_metric.png, learning_curves.png, metrics.json with the best
trial's test metrics, and the Tune experiment (TensorBoard logs) under tune/. The best trial's
checkpoint is registered, and promoted to production with --promote.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from pipeline import storage
from pipeline.config import SCHEDULES, Domain, PipelineConfig, apply_override, config_error, key_hint
from pipeline.errors import ConfigError, PipelineError
from pipeline.tasks import config_from_dict

SEARCHES = ("random", "grid", "bayes")
SCHEDULERS = ("asha", "pbt", "fifo")


@dataclass
class TuneOptions:
    search: str = "random"
    scheduler: str = "asha"
    num_samples: int = 8
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    time_budget_s: float | None = None
    epochs: int | None = None
    resume: bool = False
    storage: str | None = None
    name: str | None = None
    promote: bool = False
    mlflow_uri: str | None = None
    candidate: str | None = None
    space: dict[str, Any] = field(default_factory=dict)  # dotted key -> spec, over the config's tune.space

    @classmethod
    def from_args(cls, args, space: dict[str, Any]) -> "TuneOptions":
        """From `pipeline tune`'s parsed flags (which carry the same names)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "space"]
        return cls(**{name: getattr(args, name) for name in names}, space=space)

    def validate(self) -> None:
        if self.search not in SEARCHES:
            raise ConfigError(f"--search must be one of {SEARCHES}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler must be one of {SCHEDULERS}")
        if self.scheduler == "pbt" and self.workers_per_trial > 1:
            raise ConfigError("PBT clones trial checkpoints through Tune: use --workers-per-trial 1 with --scheduler pbt")
        if self.search == "bayes" and self.scheduler == "pbt":
            raise ConfigError("PBT mutates configs itself: use --search random with --scheduler pbt")
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ConfigError("--num-samples and --max-concurrent must be at least 1")


def to_tune_domain(key: str, spec: Domain | dict):
    """A search dimension ({loguniform: [a, b]}, {uniform: [a, b]} or {choice: [...]}) as a Tune domain."""
    from ray import tune

    if not isinstance(spec, Domain):
        try:
            spec = Domain.model_validate(spec)
        except ValidationError as exc:
            raise ConfigError(f"tune space {key}: {config_error(exc, Domain)}") from None
    if spec.loguniform:
        return tune.loguniform(*spec.loguniform)
    if spec.uniform:
        return tune.uniform(*spec.uniform)
    return tune.choice(list(spec.choice))


def search_space(cfg: PipelineConfig, opts: TuneOptions) -> dict[str, Any]:
    from ray import tune

    for key in opts.space:
        hint = key_hint(cfg, key)
        if hint is not None:
            raise ConfigError(f"tune space key {key!r} is not a config key{hint}")
    if opts.search == "grid":
        grid = {**cfg.tune.grid, **{k: v for k, v in opts.space.items() if isinstance(v, list)}}
        if not grid:
            raise ConfigError("--search grid needs tune.grid in the config (key: [values])")
        out = {k: tune.grid_search(list(v)) for k, v in grid.items()}
    else:
        out = {k: to_tune_domain(k, v) for k, v in {**cfg.tune.space, **opts.space}.items()}
    bad = [s for s in schedule_values(out) if s not in SCHEDULES]
    if bad:
        raise ConfigError(f"unknown LR schedule(s) {bad}; choose from {', '.join(SCHEDULES)}")
    return out


def schedule_values(space: dict) -> list:
    domain = space.get("train.schedule.name")
    if domain is None:
        return []
    if isinstance(domain, dict) and "grid_search" in domain:
        return list(domain["grid_search"])
    return list(getattr(domain, "categories", [])) or ([domain] if isinstance(domain, str) else [])


def apply_params(cfg: PipelineConfig, params: dict[str, Any]) -> dict:
    """The config as a dict, with a trial's parameters (dotted keys) set."""
    out = copy.deepcopy(cfg.to_dict())
    for key, value in params.items():
        apply_override(out, key, value, type(cfg))
    return out


def tune_trial(params: dict, datasets: dict, loop_base: dict, workers: int, resources: dict, experiment_uri: str) -> None:
    """One trial: the base config with this trial's parameters, trained by the shared loop."""
    from pipeline.train.loop import TuneSession, run_training

    trial_cfg = config_from_dict(apply_params(config_from_dict(loop_base["config"]), params))
    if workers == 1:
        run_training({**loop_base, "config": trial_cfg.to_dict()}, TuneSession(datasets))
        return
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.train.trainer import build_trainer

    trial_cfg.train.num_workers = workers
    trial_cfg.train.cpus_per_worker = max(1, int(resources.get("cpu", 1)))
    trial_cfg.train.use_gpu = resources.get("gpu", 0) > 0
    # The trial's Ray Train run keeps its checkpoints beside the trial on the sweep's storage: its
    # workers may sit on other nodes than the trial, which a trial's local folder would not reach.
    trainer = build_trainer(trial_cfg, datasets, {**loop_base, "config": trial_cfg.to_dict()},
                            storage.join(experiment_uri, tune.get_context().get_trial_name()), "train",
                            callbacks=[TuneReportCallback()])
    trainer.fit()


def run_tune(task_name: str, cfg: PipelineConfig, opts: TuneOptions, output_dir: str, registry=None, log=print) -> dict:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.logger.tensorboardx import TBXLoggerCallback

    from pipeline.flow import SplitCache, new_run_id, prepare_data, redacting
    from pipeline.registry import Registry
    from pipeline.tasks import get_task
    from pipeline.train.trainer import loop_config

    opts.validate()
    log = redacting(log)
    started = time.perf_counter()
    task = get_task(task_name)
    output_dir = storage.resolve(output_dir)
    storage.make_dirs(output_dir)
    candidates = dict(cfg.candidate_configs())
    name = opts.candidate or next(iter(candidates))
    if name not in candidates:
        raise ConfigError(f"--candidate {name!r} is not one of {sorted(candidates)}")
    base = candidates[name]
    if task.is_baseline(base):
        raise ConfigError(f"candidate {name!r} is a baseline ({base.model.arch}: fitted, not trained): there is nothing to tune; "
                          "pick a trained candidate with --candidate")
    if opts.epochs:
        base.train.epochs = opts.epochs
    metric, mode = base.train.metric, base.train.mode
    space = search_space(base, opts)

    prepared = prepare_data(task, base, storage.join(output_dir, "data"), log)
    cache = SplitCache(task, prepared, base, log)
    splits = cache.get(base)
    preprocessor, features = cache.featurized(base)
    label = f"{task_name}/{name}" if len(candidates) > 1 else task_name
    loop_base = loop_config(base, preprocessor.state(), splits["train"].count(), label)
    resources = {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}
    sweep_storage = storage.resolve(opts.storage or storage.join(output_dir, "tune"))
    experiment = opts.name or f"{task_name}-tune"
    path = storage.join(sweep_storage, experiment)
    ray_path, ray_fs = storage.ray_storage(path)  # credentials in the URI stay out of Tune's logs
    trainable = tune.with_parameters(tune_trial, datasets=features, loop_base=loop_base, workers=opts.workers_per_trial,
                                     resources=resources, experiment_uri=path)
    # A multi-worker trial only coordinates; its Ray Train workers hold the CPUs and GPUs (Tune needs
    # some resource in the request: one byte of memory).
    trainable = tune.with_resources(trainable, resources if opts.workers_per_trial == 1 else {"cpu": 0, "memory": 1})

    if opts.resume and tune.Tuner.can_restore(ray_path, storage_filesystem=ray_fs):
        log(f"[tune] resuming the sweep in {path}")
        tuner = tune.Tuner.restore(ray_path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=ray_fs)
    else:
        if opts.resume:
            log(f"[tune] nothing to resume in {path}; starting a new sweep")
        elif tune.Tuner.can_restore(ray_path, storage_filesystem=ray_fs):
            raise PipelineError(f"a sweep already exists in {path}: pass --resume to continue it, or another --name / --output")
        callbacks = [JsonLoggerCallback(), CSVLoggerCallback(), TBXLoggerCallback()]
        mlflow = mlflow_callback(opts, experiment, output_dir)
        if mlflow:
            callbacks.append(mlflow)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=make_scheduler(opts, base, metric, mode),
                                        search_alg=make_searcher(opts, metric, mode), num_samples=1 if opts.search == "grid" else opts.num_samples,
                                        max_concurrent_trials=opts.max_concurrent, time_budget_s=opts.time_budget_s),
            run_config=tune.RunConfig(name=experiment, storage_path=storage.ray_storage(sweep_storage)[0],
                                      storage_filesystem=ray_fs, callbacks=callbacks, verbose=1,
                                      # PBT copies checkpoints between trials: keep them all (they are small).
                                      checkpoint_config=tune.CheckpointConfig(
                                          num_to_keep=None if opts.scheduler == "pbt" else 2,
                                          checkpoint_score_attribute=metric, checkpoint_score_order=mode)),
        )
    samples = "grid" if opts.search == "grid" else opts.num_samples
    log(f"[tune] {task_name}/{name}: search={opts.search} scheduler={opts.scheduler} samples={samples} "
        f"concurrent={opts.max_concurrent} resources/trial={resources} workers/trial={opts.workers_per_trial}")
    grid = tuner.fit()
    # The baselines that share the tuned candidate's split, for metrics.json.
    baselines = {n: c for n, c in candidates.items() if task.is_baseline(c) and c.data.split == base.data.split}
    return summarize_sweep(task, name, base, grid, opts, output_dir, cache, prepared, registry or Registry(), started, log,
                           new_run_id(f"{task_name}-tune"), baselines)


def make_scheduler(opts: TuneOptions, cfg: PipelineConfig, metric: str, mode: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if opts.scheduler == "asha":
        asha = cfg.tune.asha
        return ASHAScheduler(time_attr="training_iteration", max_t=cfg.train.epochs, grace_period=asha.grace_period,
                             reduction_factor=asha.reduction_factor)
    if opts.scheduler == "pbt":
        pbt = cfg.tune.pbt
        return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=pbt.perturbation_interval,
                                       hyperparam_mutations={"train.lr": tune.loguniform(*pbt.lr_bounds)},
                                       quantile_fraction=pbt.quantile_fraction, resample_probability=pbt.resample_probability,
                                       synch=pbt.synch)
    return FIFOScheduler()


def make_searcher(opts: TuneOptions, metric: str, mode: str):
    if opts.search != "bayes":
        return None
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise PipelineError("--search bayes needs optuna: pip install 'ray-dl-pipeline[tune]'") from None
    return OptunaSearch(metric=metric, mode=mode)  # tree-structured Parzen estimator


def mlflow_callback(opts: TuneOptions, experiment: str, output_dir: str):
    """MLflow logging when the optional `mlflow` extra is installed (a local SQLite store by default:
    MLflow 3 keeps its plain-file store in maintenance mode)."""
    try:
        from ray.air.integrations.mlflow import MLflowLoggerCallback
        import mlflow  # noqa: F401
    except ImportError:
        if opts.mlflow_uri:
            raise PipelineError("--mlflow-uri needs mlflow: pip install 'ray-dl-pipeline[mlflow]'") from None
        return None
    class OnceParamsMLflowCallback(MLflowLoggerCallback):
        """MLflow params are immutable: log a trial's config once; a PBT restart with a perturbed lr
        shows up in the logged `base_lr` metric instead of failing on a second params write."""

        def log_trial_start(self, trial):
            if trial not in self._trial_runs:
                super().log_trial_start(trial)

    if not opts.mlflow_uri and storage.is_remote(output_dir):
        return None  # an SQLite store cannot live in an object store: pass --mlflow-uri to log this sweep
    uri = opts.mlflow_uri or "sqlite:///" + os.path.join(output_dir, "mlflow.db")
    return OnceParamsMLflowCallback(tracking_uri=uri, experiment_name=experiment, save_artifact=False)


def copy_best_checkpoint(result, metric: str, mode: str, target: str) -> None:
    """The trial's best checkpoint: Tune's own, or for a multi-worker trial the Ray Train checkpoint
    whose path `TuneReportCallback` reported beside the metrics."""
    from ray.train import Checkpoint

    from pipeline.train.checkpoint import copy_checkpoint

    if result.best_checkpoints:
        checkpoint = result.get_best_checkpoint(metric=metric, mode=mode)
    else:
        from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

        history = result.metrics_dataframe
        if history is None or CHECKPOINT_PATH_KEY not in history or history[CHECKPOINT_PATH_KEY].isna().all():
            raise PipelineError(f"trial {trial_id(result)} left no checkpoint to register")
        reported = history[history[CHECKPOINT_PATH_KEY].notna()]
        row = reported[metric].idxmax() if mode == "max" else reported[metric].idxmin()
        checkpoint = Checkpoint(reported.loc[row, CHECKPOINT_PATH_KEY], filesystem=result.filesystem)  # on the sweep's storage
    copy_checkpoint(checkpoint, target)


def trial_id(result) -> str:
    """From the trial's directory (`tune_trial_<exp>_<n>_...`): PBT copies a donor's last metrics,
    trial_id included, into the trial it exploits, so the metrics cannot be trusted for this."""
    parts = os.path.basename(result.path.rstrip("/")).split("_")
    return "_".join(parts[2:4]) if len(parts) > 3 else parts[-1]


def trial_history(result) -> pd.DataFrame:
    """Every row the trial reported. After a PBT exploit Tune's `metrics_dataframe` can start again at
    the restored epoch, dropping the rows (and learning rate) from before; the trial's progress.csv
    keeps them, so the longer of the two is used."""
    history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    try:
        fs_path = (result.filesystem, posixpath.join(result.path, "progress.csv")) if result.filesystem is not None \
            else storage.join(result.path, "progress.csv")
        logged = pd.read_csv(io.BytesIO(storage.read_bytes(fs_path)))
    except (PipelineError, OSError, ValueError):  # no progress.csv (or an empty one): Tune's own record
        return history
    return logged if len(logged) > len(history) else history


def trial_rows(grid, metric: str, mode: str) -> pd.DataFrame:
    rows = []
    for result in grid:
        history = trial_history(result)
        values = history[metric] if metric in history else pd.Series(dtype=float)
        base_lr = history["base_lr"] if "base_lr" in history else pd.Series(dtype=float)
        row = {"trial_id": trial_id(result),
               **{k: v for k, v in (result.config or {}).items()},
               f"best_{metric}": (values.max() if mode == "max" else values.min()) if len(values) else math.nan,
               f"last_{metric}": values.iloc[-1] if len(values) else math.nan,
               "epochs": int(history["training_iteration"].max()) if "training_iteration" in history and len(history) else 0,
               "lr_start": base_lr.iloc[0] if len(base_lr) else math.nan,
               "lr_end": base_lr.iloc[-1] if len(base_lr) else math.nan,
               "lr_changes": int((base_lr.diff().fillna(0) != 0).sum()) if len(base_lr) else 0,
               "status": "error" if result.error else "done",
               "path": result.path}
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(f"best_{metric}", ascending=mode == "min", na_position="last").reset_index(drop=True)


def summarize_sweep(task, name: str, base: PipelineConfig, grid, opts: TuneOptions, output_dir: str, cache, prepared,
                    registry, started: float, log, run_id: str, baselines: dict | None = None) -> dict:
    """Results table and CSV, best config YAML, plots, and the best checkpoint evaluated and registered."""
    from pipeline.evaluate import evaluate_model
    from pipeline.flow import baseline_metrics, fit_and_evaluate_baseline, register, run_metrics
    from pipeline.plots import lr_vs_metric_png, trial_curves_png

    metric, mode = base.train.metric, base.train.mode
    table = trial_rows(grid, metric, mode)
    storage.write_text(storage.join(output_dir, "results.csv"), table.drop(columns=["path"]).to_csv(index=False))
    shown = table.drop(columns=["path"]).copy()
    with pd.option_context("display.max_columns", 30, "display.width", 200, "display.float_format", "{:.4g}".format):
        log("[tune] results (best first):\n" + shown.to_string(index=False))
    errors = int((table["status"] == "error").sum())
    if errors == len(table):
        raise PipelineError(f"all {errors} trials failed; see the trial logs under {grid.experiment_path}")
    best = grid.get_best_result(metric=metric, mode=mode, scope="all")
    best_raw = apply_params(base, best.config)
    storage.write_text(storage.join(output_dir, "best_config.yaml"), yaml.safe_dump(best_raw, sort_keys=False))
    lr_vs_metric_png(table, metric, storage.join(output_dir, "lr_vs_metric.png"))
    trial_curves_png({trial_id(r): r.metrics_dataframe for r in grid if r.metrics_dataframe is not None},
                     metric, storage.join(output_dir, "learning_curves.png"))

    model_dir = storage.join(output_dir, "model")
    copy_best_checkpoint(best, metric, mode, model_dir)
    results = {name: evaluate_model(task, model_dir, cache.get(base), output_dir)}
    history = best.metrics_dataframe
    epochs = [c for c in history.columns if c in ("epoch", "lr", "base_lr", "train_loss", "epoch_seconds") or c.startswith("val_")]
    train = {"epochs_run": int(len(history)), "history": history[epochs].to_dict("records")}
    total_epochs = int(table["epochs"].sum())
    sweep = {"metric": metric, "mode": mode, "search": opts.search, "scheduler": opts.scheduler, "trials": len(table),
             "errored_trials": errors, "trial_epochs": total_epochs, "best_config": best.config,
             f"best_{metric}": float(table[f"best_{metric}"].iloc[0]), "experiment": grid.experiment_path}
    baselines = baselines or {}
    fitted = {n: fit_and_evaluate_baseline(task, c, cache, storage.join(output_dir, "baselines", n), f"tune/{n}", log) for n, c in baselines.items()}
    metrics = run_metrics(task, run_id, task.summarize(results, name), prepared, baseline_metrics(task, baselines, fitted), name, train,
                          started, output_dir, tune=sweep)
    log(f"[tune] {len(table)} trials, {total_epochs} trial-epochs, best {metric}={sweep[f'best_{metric}']:.4f} with {best.config}")
    register(task, run_id, model_dir, metrics, registry, opts.promote, log)
    log(f"[tune] best config: {storage.join(output_dir, 'best_config.yaml')}")
    return metrics
