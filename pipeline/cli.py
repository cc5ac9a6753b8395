"""`pipeline` command line: one app, a subcommand per stage.

    pipeline demo                              every task end to end on embedded data
    pipeline run TASK [--config F] [--data URI] [--num-workers N] [--use-gpu] [--output DIR]
    pipeline data TASK [--data URI] [--output DIR]
    pipeline tune TASK [--search random|grid|bayes] [--scheduler asha|pbt|fifo] [--num-samples N] [--promote]
    pipeline serve [--host H] [--port P]
    pipeline deploy --registry URI             deploy the Serve app onto a cluster and return
    pipeline predict TASK --input JSON
    pipeline batch-predict TASK --input URI --output URI
    pipeline registry list|promote ...

Errors the user can fix print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pipeline import __version__
from pipeline.errors import PipelineError
from pipeline.tasks import task_names


REGISTRY_HELP = "registry path or URI (default: $PIPELINE_REGISTRY or ~/.pipeline/registry)"
ADDRESS_HELP = "Ray cluster address (default: $RAY_ADDRESS, else a local Ray)"
VERBOSE_HELP = "show Ray's own progress output"


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=task_names(), help="workload")
    p.add_argument("--config", help="YAML file merged over the task's defaults")
    p.add_argument("--data", help="input path, glob or URI (default: the embedded data set)")
    p.add_argument("--format", help="input format (default: from the file names)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. train.lr=0.01 (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (splits, initialisation, shuffling)")
    p.add_argument("--output", help="output directory (default: runs/<run-id>)")
    p.add_argument("--address", help=ADDRESS_HELP)
    add_shared_storage_arg(p)
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def add_shared_storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shared-storage", action="store_true",
                   help="local paths are folders every node mounts (NFS): allow them on a multi-node cluster")


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-workers", type=int, help="data-parallel training workers")
    p.add_argument("--cpus-per-worker", type=int, help="CPUs per training worker")
    p.add_argument("--use-gpu", action="store_true", default=None, help="train on GPUs (one per worker)")
    p.add_argument("--epochs", type=int, help="maximum training epochs")
    p.add_argument("--batch-size", type=int, help="rows per training step on each worker")
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    p.add_argument("--schedule", help="LR schedule: constant, step, exp_decay, cosine, one_cycle, warmup_cosine")
    p.add_argument("--amp", action="store_true", default=None, help="automatic mixed precision (bf16 where supported)")
    p.add_argument("--amp-dtype", choices=["auto", "bf16", "fp16"], help="mixed precision type (default auto: bf16, or fp16 "
                   "with loss scaling on GPUs without bf16)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--registry", help=REGISTRY_HELP)
    p.add_argument("--mlflow", action="store_true", help="log the run to MLflow (a SQLite store in the output folder)")
    p.add_argument("--mlflow-uri", help="log the run to this MLflow tracking server (or store) instead")
    p.add_argument("--run-id", help="name of the run; an existing run's checkpoints are resumed")
    p.add_argument("--no-promote", action="store_true", help="register the model without making it production")


# flag -> serve.yaml key; a flag left out keeps the file's value
SERVE_FLAGS = {
    "min_replicas": "deployment.min_replicas", "max_replicas": "deployment.max_replicas",
    "target_ongoing_requests": "deployment.target_ongoing_requests", "max_ongoing_requests": "deployment.max_ongoing_requests",
    "max_queued_requests": "deployment.max_queued_requests", "replica_cpus": "deployment.num_cpus",
    "replica_gpus": "deployment.num_gpus", "max_batch_size": "deployment.max_batch_size",
    "batch_wait_timeout_s": "deployment.batch_wait_timeout_s", "max_request_bytes": "max_request_bytes",
    "request_timeout_s": "request_timeout_s", "reload_interval": "reload_interval_s",
}
# what `pipeline deploy` changes for a cluster, before --serve-config and the flags
DEPLOY_PRESET = {"deployment": {"num_cpus": 1.0, "max_replicas": 4}, "reload_interval_s": 30.0}


def add_serve_args(p: argparse.ArgumentParser, host: str, proxy_location: str) -> None:
    """`pipeline serve` (a laptop, the foreground) and `pipeline deploy` (a cluster) differ in defaults only."""
    p.add_argument("--host", default=host, help="address Serve's HTTP proxies listen on")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--registry", help=REGISTRY_HELP)
    p.add_argument("--tasks", nargs="+", choices=task_names(), help="the tasks to serve (default: all)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--proxy-location", default=proxy_location, choices=["HeadOnly", "EveryNode"],
                   help="where Serve's HTTP proxies run (EveryNode: one per node, behind a load balancer)")
    p.add_argument("--serve-config", help="YAML with serve.yaml's keys (any subset), per-task overrides under `tasks`")
    g = p.add_argument_group("deployments (defaults: pipeline/serve/serve.yaml)")
    g.add_argument("--min-replicas", type=int, help="fewest replicas per task when autoscaling")
    g.add_argument("--max-replicas", type=int, help="most replicas per task when autoscaling")
    g.add_argument("--target-ongoing-requests", type=float, help="autoscaling target per replica")
    g.add_argument("--max-ongoing-requests", type=int, help="requests a replica works on at once")
    g.add_argument("--max-queued-requests", type=int, help="queued requests before 503 (-1: unbounded)")
    g.add_argument("--replica-cpus", type=float, help="CPUs reserved per model replica")
    g.add_argument("--replica-gpus", type=float, help="GPUs per model replica (fractions share a GPU)")
    g.add_argument("--max-batch-size", type=int, help="dynamic batching: largest batch (1: no batching)")
    g.add_argument("--batch-wait-timeout-s", type=float, help="dynamic batching: how long a batch waits to fill")
    g.add_argument("--max-request-bytes", type=int, help="larger request bodies answer 413")
    g.add_argument("--request-timeout-s", type=float, help="a model slower than this answers 503")
    g.add_argument("--reload-interval", type=float, help="seconds between checks for a newly promoted model")
    add_shared_storage_arg(p)


def serve_settings(args: argparse.Namespace, preset: dict | None = None):
    from pipeline.serve.settings import load_serve_settings

    return load_serve_settings(args.serve_config, {key: getattr(args, flag) for flag, key in SERVE_FLAGS.items()}, preset)


def concurrency_range(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give MIN,MAX actors, e.g. 1,4") from None
    if len(parts) not in (1, 2) or not 1 <= parts[0] <= parts[-1]:
        raise argparse.ArgumentTypeError(f"{text!r}: give MIN,MAX actors with 1 <= MIN <= MAX, e.g. 1,4")
    return parts[0], parts[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description="End-to-end deep-learning pipeline on Ray.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="every task end to end on embedded data, then one HTTP request each")
    demo.add_argument("--output", default="runs/demo", help="folder of the runs, one per task")
    demo.add_argument("--registry", help=REGISTRY_HELP)
    demo.add_argument("--tasks", nargs="+", choices=task_names(), help="subset of tasks (default: all)")
    demo.add_argument("--num-workers", type=int, help="training workers (default: each task's, 2)")
    demo.add_argument("--no-pack", action="store_true",
                      help="train each task's candidates as `pipeline run` does (the image CNN, BiLSTM and neural ranking "
                           "model data-parallel over the workers) instead of every candidate on one worker, side by side "
                           "(the same models either way)")
    demo.add_argument("--port", type=int, default=0, help="port for the HTTP check (default: a free one)")
    demo.add_argument("--no-serve", action="store_true", help="skip the HTTP check")
    demo.add_argument("--address", help=ADDRESS_HELP)
    add_shared_storage_arg(demo)
    demo.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)

    run = sub.add_parser("run", help="data stages, training, evaluation and registration for one task")
    add_config_args(run)
    add_train_args(run)

    data = sub.add_parser("data", help="data stages only; prints the data report")
    add_config_args(data)

    tune = sub.add_parser("tune", help="learning-rate / schedule sweep with Ray Tune over the same training loop")
    add_config_args(tune)
    tune.add_argument("--search", default="random", choices=["random", "grid", "bayes"], help="bayes: Optuna (TPE)")
    tune.add_argument("--scheduler", default="asha", choices=["asha", "pbt", "fifo"], help="trial scheduler (fifo: none)")
    tune.add_argument("--num-samples", type=int, default=8, help="trials to sample (random, bayes)")
    tune.add_argument("--max-concurrent", type=int, default=2, help="trials running at once")
    tune.add_argument("--cpus-per-trial", type=float, default=1.0, help="per worker with --workers-per-trial > 1")
    tune.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share a GPU, e.g. 0.25")
    tune.add_argument("--workers-per-trial", type=int, default=1, help="each trial a multi-worker Ray Train run")
    tune.add_argument("--time-budget-s", type=float, help="stop starting and running trials after this many seconds")
    tune.add_argument("--epochs", type=int, help="maximum epochs per trial")
    tune.add_argument("--lr-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="log-uniform learning-rate range")
    tune.add_argument("--schedules", help="comma-separated LR schedules to search")
    tune.add_argument("--optimizers", help="comma-separated optimizers to search (sgd, adam, adamw)")
    tune.add_argument("--candidate", help="which model candidate to tune (default: the first)")
    tune.add_argument("--resume", action="store_true", help="continue an interrupted sweep in the same --output/--storage")
    tune.add_argument("--storage", help="sweep storage path or URI (default: OUTPUT/tune), e.g. s3://bucket/sweeps")
    tune.add_argument("--name", help="experiment name (default: TASK-tune)")
    tune.add_argument("--registry", help=REGISTRY_HELP)
    tune.add_argument("--promote", action="store_true", help="make the best trial's model production")
    tune.add_argument("--mlflow-uri", help="MLflow tracking URI (default with mlflow installed and a local --output: sqlite:///OUTPUT/mlflow.db)")

    serve = sub.add_parser("serve", help="serve every task's production model over HTTP (foreground)")
    add_serve_args(serve, host="127.0.0.1", proxy_location="HeadOnly")
    deploy = sub.add_parser("deploy", help="deploy the Serve app onto the cluster and return (it keeps serving)")
    add_serve_args(deploy, host="0.0.0.0", proxy_location="EveryNode")

    predict = sub.add_parser("predict", help="predict one request with the production model (no Ray needed)")
    predict.add_argument("task", choices=task_names())
    predict.add_argument("--input", required=True, help="request JSON, inline or @file.json")
    predict.add_argument("--registry", help=REGISTRY_HELP)
    predict.add_argument("--model", help="a model directory or URI instead of the production model")

    batch = sub.add_parser("batch-predict", help="Ray Data batch inference with the production model")
    batch.add_argument("task", choices=task_names())
    batch.add_argument("--input", required=True, help="input path or URI (same formats as --data)")
    batch.add_argument("--output", required=True, help="output directory or URI (Parquet)")
    batch.add_argument("--format", default="auto", help="auto (from the extension), parquet, csv, json (JSON lines), ...")
    batch.add_argument("--concurrency", type=concurrency_range, default=(1, 1), metavar="MIN,MAX",
                       help="actors in the prediction pool, each holding the model (one number: a fixed pool)")
    batch.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per prediction actor (fractions share one)")
    batch.add_argument("--batch-size", type=int, default=1024, help="rows per forward pass")
    batch.add_argument("--registry", help=REGISTRY_HELP)
    batch.add_argument("--model", help="a model directory or URI instead of the production model")
    batch.add_argument("--address", help=ADDRESS_HELP)
    add_shared_storage_arg(batch)

    registry = sub.add_parser("registry", help="list registered runs or promote one")
    registry.add_argument("action", choices=["list", "promote"])
    registry.add_argument("task", nargs="?", choices=task_names())
    registry.add_argument("run_id", nargs="?", help="the run to promote")
    registry.add_argument("--registry", help=REGISTRY_HELP)
    registry.add_argument("--mlflow-uri", help="also point this MLflow's production alias at the promoted run")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.config import parse_override

    out: dict[str, Any] = dict(parse_override(s) for s in args.set)
    mapping = {
        "data": "data.source", "format": "data.format", "seed": "seed", "num_workers": "train.num_workers",
        "cpus_per_worker": "train.cpus_per_worker", "use_gpu": "train.use_gpu", "epochs": "train.epochs",
        "batch_size": "train.batch_size", "lr": "train.lr", "optimizer": "train.optimizer",
        "schedule": "train.schedule.name", "amp": "train.amp", "amp_dtype": "train.amp_dtype", "compile": "train.compile",
    }
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = value
    return out


def load_run_config(args: argparse.Namespace):
    from pipeline.tasks import load_config

    return load_config(args.task, args.config, overrides_from_args(args))


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline import storage
    from pipeline.flow import new_run_id, run_pipeline
    from pipeline.registry import Registry, check_name
    from pipeline.runtime import init_ray, require_shared_storage
    from pipeline.timing import Timings
    from pipeline.tracking import mlflow_uri

    cfg = load_run_config(args)
    run_id = check_name(args.run_id) if args.run_id else new_run_id(args.task)
    output = args.output or os.path.join("runs", run_id)
    registry = Registry(args.registry)
    timings = Timings()
    with timings.measure("ray_start"):
        init_ray(args.address, verbose=args.verbose)
    require_shared_storage({"--output": output, "--registry": registry.root}, args.shared_storage)
    tracking = mlflow_uri(args.mlflow_uri, args.mlflow, output)
    metrics = run_pipeline(cfg, output, registry, promote=not args.no_promote, run_id=run_id, timings=timings, mlflow_uri=tracking)
    print(f"metrics: {storage.redact(storage.join(metrics['output_dir'], 'metrics.json'))}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from pipeline import storage
    from pipeline.flow import prepare_data
    from pipeline.runtime import init_ray, require_shared_storage
    from pipeline.tasks import get_task

    cfg = load_run_config(args)
    init_ray(args.address, verbose=args.verbose, dashboard=False)
    output = storage.resolve(args.output or os.path.join("runs", f"data-{args.task}"))
    require_shared_storage({"--output": output}, args.shared_storage)
    prepare_data(get_task(args.task), cfg, output)
    print(f"data report: {storage.join(output, 'data_report.json')}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pipeline import storage
    from pipeline.registry import Registry
    from pipeline.runtime import init_ray, require_shared_storage
    from pipeline.tune import TuneOptions, run_tune

    cfg = load_run_config(args)
    space: dict[str, Any] = {}
    if args.lr_range:
        space["train.lr"] = {"loguniform": sorted(args.lr_range)}
    if args.schedules:
        space["train.schedule.name"] = {"choice": args.schedules.split(",")} if args.search != "grid" else args.schedules.split(",")
    if args.optimizers:
        space["train.optimizer"] = {"choice": args.optimizers.split(",")} if args.search != "grid" else args.optimizers.split(",")
    opts = TuneOptions.from_args(args, space)
    opts.validate()
    output = storage.resolve(args.output or os.path.join("runs", f"{args.task}-tune"))
    registry = Registry(args.registry)
    init_ray(args.address, verbose=args.verbose)
    require_shared_storage({"--output": output, "--storage": args.storage, "--registry": registry.root}, args.shared_storage)
    run_tune(args.task, cfg, opts, output, registry)
    print(f"results: {storage.join(output, 'results.csv')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.registry import Registry
    from pipeline.serve.server import serve_foreground

    serve_foreground(Registry(args.registry), args.host, args.port, args.tasks, serve_settings(args), args.address,
                     args.proxy_location, args.shared_storage)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from pipeline.registry import Registry
    from pipeline.runtime import init_ray
    from pipeline.serve.server import deploy

    init_ray(args.address)
    deploy(Registry(args.registry), args.host, args.port, args.tasks, serve_settings(args, DEPLOY_PRESET),
           args.proxy_location, args.shared_storage)
    print("deployed; `serve status` shows it, `serve shutdown` removes it")
    return 0


def read_request(text: str) -> Any:
    if text.startswith("@"):
        with open(text[1:]) as fh:
            text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"--input is not valid JSON: {exc}") from None


def resolve_model(task: str, registry_root: str | None, model: str | None) -> str:
    from pipeline.registry import Registry

    if model:
        return model
    registry = Registry(registry_root)
    uri = registry.production_uri(task)
    if uri is None:
        raise PipelineError(f"no production model for {task!r} in {registry.root}; run `pipeline run {task}` first")
    return uri


def cmd_predict(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pipeline.predictor import Predictor
    from pipeline.tasks import get_task
    from pipeline.tasks.base import RequestError

    task = get_task(args.task)
    payload = read_request(args.input)
    try:
        request = task.request_model.model_validate(payload).model_dump()
        answer = task.answer(request, Predictor(resolve_model(args.task, args.registry, args.model)))
    except ValidationError as exc:
        raise PipelineError(f"invalid request: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    except RequestError as exc:
        raise PipelineError(f"invalid request: {exc}") from None
    print(json.dumps(answer, indent=2))
    return 0


def cmd_batch_predict(args: argparse.Namespace) -> int:
    from pipeline import storage
    from pipeline.runtime import init_ray, require_shared_storage
    from pipeline.serve.batch import batch_predict

    init_ray(args.address, dashboard=False)
    model = resolve_model(args.task, args.registry, args.model)
    output = storage.resolve(args.output)
    require_shared_storage({"--output": output, "--model" if args.model else "--registry": model}, args.shared_storage)
    rows = batch_predict(args.task, model, args.input, output, args.format, args.concurrency, args.num_gpus, args.batch_size)
    print(f"wrote predictions for {rows:,} rows to {args.output}")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from pipeline.registry import Registry

    registry = Registry(args.registry)
    if args.action == "promote":
        if not (args.task and args.run_id):
            raise PipelineError("usage: pipeline registry promote TASK RUN_ID")
        registry.promote(args.task, args.run_id)
        print(f"{args.task}: production is now {args.run_id}")
        if args.mlflow_uri:
            from pipeline.tracking import MLFLOW_ALIAS, mirror_production, registered_model

            version = mirror_production(args.mlflow_uri, args.task, args.run_id)
            print(f"MLflow: {registered_model(args.task)} alias {MLFLOW_ALIAS} -> version {version}" if version
                  else f"MLflow: run {args.run_id} was not logged to {args.mlflow_uri}; no alias moved")
        return 0
    for task in [args.task] if args.task else task_names():
        production = registry.production(task)
        for run_id in registry.runs(task):
            test = registry.metrics(task, run_id).get("test", {})
            shown = " ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float))
            print(f"{task:<12} {run_id:<40} {'production' if run_id == production else '':<11} {shown}")
    return 0


COMMANDS = {"run": cmd_run, "data": cmd_data, "tune": cmd_tune, "demo": cmd_demo, "serve": cmd_serve, "deploy": cmd_deploy,
            "predict": cmd_predict,
            "batch-predict": cmd_batch_predict, "registry": cmd_registry}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors may arrive wrapped by Ray
        user_error = find_user_error(exc)
        if user_error is None:
            raise
        from pipeline.storage import redact

        print(f"error: {redact(str(user_error))}", file=sys.stderr)
        return 2


def find_user_error(exc: BaseException | None) -> PipelineError | None:
    """The PipelineError behind `exc`, also when a Ray task or actor raised it remotely."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)  # RayTaskError / UserCodeException carry the original
        if isinstance(cause, BaseException):
            exc = cause
            continue
        if isinstance(exc, PipelineError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
