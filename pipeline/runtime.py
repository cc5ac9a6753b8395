"""Ray start-up in one place: join a cluster when there is one, else start a quiet local instance."""

from __future__ import annotations

import logging
import os

from pipeline.tasks import PLUGINS_ENV

_QUIET_LOGGERS = ("ray.data", "ray.train", "ray.tune", "ray.serve", "ray._private", "ray.air")


def init_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Connect to `address` (or $RAY_ADDRESS, as `ray job submit` sets), else start Ray locally."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = {"logging_level": logging.INFO if verbose else logging.WARNING, "log_to_driver": True}
        if os.environ.get(PLUGINS_ENV):  # workers, trials and Serve replicas must find the same task modules
            kwargs["runtime_env"] = {"env_vars": {PLUGINS_ENV: os.environ[PLUGINS_ENV]}}
        if address:
            ray.init(address=address, **kwargs)
        else:
            # The dashboard process also serves the state API that Ray Train's placement-group
            # cleaner polls; without it that cleaner logs a warning every second.
            ray.init(num_cpus=num_cpus, dashboard_host="127.0.0.1", **kwargs)
    configure_data_context(verbose)


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
    if not verbose:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
