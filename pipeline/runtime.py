"""Ray start-up in one place: join a cluster when there is one, else start a quiet local instance."""

from __future__ import annotations

import logging
import os

from pipeline import storage
from pipeline.errors import ConfigError
from pipeline.tasks import PLUGINS_ENV

_QUIET_LOGGERS = ("ray.data", "ray.train", "ray.tune", "ray.serve", "ray._private", "ray.air")


def init_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False, dashboard: bool = True) -> None:
    """Connect to `address` (or $RAY_ADDRESS, as `ray job submit` sets), else start Ray locally.
    `dashboard=False` starts a local Ray without its dashboard and state API, 1-1.5 s sooner on 2
    cores, and without Ray Data's two cluster actors (`without_ray_data_cluster_actors`): for commands
    that run no Ray Train (its placement-group cleaner polls that API)."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = {"logging_level": logging.INFO if verbose else logging.WARNING, "log_to_driver": True}
        if os.environ.get(PLUGINS_ENV):  # workers, trials and Serve replicas must find the same task modules
            kwargs["runtime_env"] = {"env_vars": {PLUGINS_ENV: os.environ[PLUGINS_ENV]}}
        if address:
            ray.init(address=address, **kwargs)
        else:
            for name, value in LOCAL_START_CONFIG.items():
                os.environ.setdefault(name, value)  # inherited by the raylet this starts; a user's setting is kept
            ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", **kwargs)
            if not dashboard:
                without_ray_data_cluster_actors()
    configure_data_context(verbose)
    if not verbose:
        hide_known_ray_noise()


# Ray's connection retries, for a local Ray this process starts. The raylet connects to its own object
# store, which starts in a thread beside it; when the store's socket is not bound yet at the first try
# (about half the starts seen on 2 cores), Ray sleeps the retry interval, 1 s by default, before the
# next: the start's largest single wait. 100 ms between 100 tries keeps the same 10 s before giving up.
LOCAL_START_CONFIG = {"RAY_raylet_client_connect_timeout_milliseconds": "100", "RAY_raylet_client_num_connect_attempts": "100"}


# Lines Ray's own processes send to the driver that say nothing about this run (shown with --verbose):
KNOWN_RAY_NOISE = (
    # Ray Train's and Ray Data's own actors (PreemptionWatcher, MapWorker): ray-project/ray#53727, about
    # restarting those actors, logged at ERROR though nothing failed.
    r"has constructor arguments in the object store and max_restarts > 0",
    # Ray Data executors that Ray Train starts in actors of their own (SplitCoordinator): progress output
    # is off by the pipeline's choice, and each stage prints its own line with its time.
    r"Progress bars disabled\. To enable, set",
    r"Dataset \S+ execution finished in [0-9.]+ seconds",
)


def hide_known_ray_noise() -> None:
    """Drops `KNOWN_RAY_NOISE` from the worker output Ray forwards to this driver. The filter sits in the
    driver, where every node's lines arrive, so it needs nothing from the workers. A Ray without this
    internal (or with RAY_DEDUP_LOGS=0, which forwards every line as it is) prints them as before."""
    import re

    try:
        from ray._private import ray_logging
    except ImportError:
        return
    for deduplicator in (getattr(ray_logging, "stdout_deduplicator", None), getattr(ray_logging, "stderr_deduplicator", None)):
        if deduplicator is None or not hasattr(deduplicator, "skip_re") or getattr(deduplicator, "hides_known_ray_noise", False):
            continue
        patterns = [*KNOWN_RAY_NOISE, *([deduplicator.skip_re.pattern] if deduplicator.skip_re else [])]  # RAY_DEDUP_LOGS_SKIP_REGEX kept
        deduplicator.skip_re = re.compile("|".join(f"(?:{p})" for p in patterns))
        deduplicator.hides_known_ray_noise = True


def configure_data_context(verbose: bool = False) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # The pipeline prints one line per stage; Ray Data's own progress logging is opt-in (--verbose).
    ctx.enable_progress_bars = verbose
    # Blocks come out in input order: reproducible quarantine files, de-duplication and shards.
    ctx.execution_options.preserve_order = True
    # Larger blocks than Ray's 1 MiB default: the stages are vectorised, so per-block overhead, not
    # compute, dominates on small blocks (measured in benchmarks/data_stages.py).
    ctx.target_min_block_size = max(ctx.target_min_block_size or 0, 16 * 2**20)
    ctx.print_on_execution_start = verbose
    size_from_cluster_until_coordinator_answers()
    if not verbose:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        # Its one warning says that progress bars are off, which is this function's own choice.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def size_from_cluster_until_coordinator_answers() -> None:
    """Ray Data 2.60 learns the CPUs, GPUs and object store it may use from its autoscaling coordinator
    actor, which answers asynchronously: the first look returns nothing, and the executor looks again
    only a second later. In a session's first execution the actor is still starting (a new worker
    process, 1-2 s on 2 busy cores). With zero limits the executor runs one task at a time (seen on
    2 cores: the 1M-row cleaning pass on one core for its first 1.9 s). Until the coordinator answers,
    this sizes the execution from the cluster's resources as the GCS knows them, as Ray Data did
    before the coordinator; once it answers, its reservation applies, refreshed once a second. A Ray
    without these internals is left as it is."""
    import ray

    try:
        from ray.data._internal.execution.interfaces import ExecutionResources
        from ray.data._internal.execution.resource_manager import ResourceManager
    except ImportError:
        return
    original = getattr(ResourceManager, "get_global_limits", None)
    if original is None or getattr(original, "sizes_from_cluster", False):
        return

    def or_the_cluster(reserved):
        def total_resources():
            total = reserved()
            return total if not total.is_zero() else ExecutionResources.from_resource_dict(ray.cluster_resources())

        total_resources.sizes_from_cluster = True
        return total_resources

    def get_global_limits(self):
        reserved = getattr(self, "_get_total_resources", None)
        if callable(reserved) and not getattr(reserved, "sizes_from_cluster", False):
            self._get_total_resources = or_the_cluster(reserved)
        return original(self)

    get_global_limits.sizes_from_cluster = True
    ResourceManager.get_global_limits = get_global_limits


def without_ray_data_cluster_actors() -> None:
    """Ray Data 2.60 starts two detached actors in a session's first execution, each a worker process
    that imports Ray Data (about 1.1 CPU-seconds each, measured on 2 cores): a stats actor, whose
    metrics only the dashboard and its Prometheus export read, and an autoscaling coordinator, which
    asks the cluster's autoscaler for nodes and shares them out between executions. In a local Ray
    that this process started without a dashboard, neither has anyone to serve: nothing reads the
    metrics, and the cluster is this machine, which no autoscaler grows. So here metrics are dropped
    and each execution is sized from the cluster's resources, as Ray Data did before it had a
    coordinator. Called only for such a Ray (`init_ray(dashboard=False)` without an address); a Ray
    without these internals is left as it is."""
    import ray

    try:
        from ray.data._internal import stats
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import DefaultAutoscalingCoordinator
    except ImportError:
        return
    if not hasattr(stats, "get_or_create_stats_actor") or not all(
            hasattr(DefaultAutoscalingCoordinator, name) for name in ("request_resources", "cancel_request", "get_reserved_resources")):
        return

    class DiscardedCall:
        @staticmethod
        def remote(*args, **kwargs) -> None:
            return None

    class NoStatsActor:  # `actor.method.remote(...)` calls, each dropped
        def __getattr__(self, name: str) -> type[DiscardedCall]:
            return DiscardedCall

    stats.get_or_create_stats_actor = NoStatsActor
    DefaultAutoscalingCoordinator.request_resources = lambda self, *args, **kwargs: None
    DefaultAutoscalingCoordinator.cancel_request = lambda self: None
    DefaultAutoscalingCoordinator.get_reserved_resources = lambda self: {"this machine": ray.cluster_resources()}


def live_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def cluster_is_multi_node() -> bool:
    """True when work may run on another node than this driver's: the cluster has several live nodes,
    or this node offers no CPUs (a KubeRay/launcher head with `num-cpus: 0` whose workers come later)."""
    import ray

    nodes = live_nodes()
    here = ray.get_runtime_context().get_node_id()
    this_node = next((n for n in nodes if n["NodeID"] == here), None)
    return len(nodes) > 1 or (this_node is not None and not this_node.get("Resources", {}).get("CPU"))


def require_shared_storage(locations: dict[str, str | None], declared_shared: bool = False) -> None:
    """Fails before any work starts when an artifact location is a plain local path but the work runs on
    several nodes: each node would write its part to its own disk (Ray Train refuses such a path at
    the first checkpoint). `locations` maps the flag that set each location to its value."""
    local = {flag: uri for flag, uri in locations.items() if uri and not storage.is_remote(uri)}
    if declared_shared or not local or not cluster_is_multi_node():
        return
    shown = ", ".join(f"{flag} {storage.resolve(uri)}" for flag, uri in local.items())
    raise ConfigError(
        f"{shown}: local path{'s' if len(local) > 1 else ''} on a Ray cluster of several nodes, where workers, "
        f"actors and Serve replicas on other nodes cannot reach {'them' if len(local) > 1 else 'it'}. Use shared "
        f"storage: {next(iter(local))} s3://BUCKET/... (or gs://...), or add --shared-storage if the path is a "
        f"folder mounted at the same place on every node (NFS, EFS, Filestore)")


def resources_note(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> str | None:
    """Why a Ray Train run of `workers` x (CPUs, GPUs) cannot start on the cluster as it is now, or None.
    Train waits for resources without a word; an autoscaler may still add the nodes, so this is a warning."""
    nodes = [n.get("Resources", {}) for n in live_nodes()]
    fits = sum(min(int(n.get("CPU", 0) // cpus_per_worker) if cpus_per_worker else workers,
                   int(n.get("GPU", 0) // gpus_per_worker) if gpus_per_worker else workers) for n in nodes)
    if fits >= workers:
        return None
    total_cpus, total_gpus = sum(n.get("CPU", 0) for n in nodes), sum(n.get("GPU", 0) for n in nodes)
    return (f"{workers} training worker(s) of {cpus_per_worker:g} CPU{f' and {gpus_per_worker:g} GPU' if gpus_per_worker else ''} "
            f"each do not fit this cluster as it is ({total_cpus:g} CPUs, {total_gpus:g} GPUs on {len(nodes)} node(s)): "
            f"training waits until nodes are added; lower --num-workers / --cpus-per-worker, or Ctrl-C")
