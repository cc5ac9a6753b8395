"""Where a run's wall time goes: named phases, logged as they end and summed into one table at the end
of every `pipeline run` (and in metrics.json as `timings`), so fixed costs show beside training."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable

Log = Callable[[str], None]

# Summary order; phases not listed here come after, in the order they were first recorded.
PHASES = ("ray_start", "ingest", "clean", "split", "features", "train_startup", "training", "train_shutdown",
          "evaluation", "baselines", "registration")


class Timings:
    """Seconds per phase (a phase recorded twice, e.g. once per model candidate, adds up). Wall time spent
    on other runs' work (`away`: the demo interleaves its tasks) is not this run's."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self.away_seconds = 0.0

    def away(self, seconds: float) -> None:
        self.away_seconds += max(0.0, seconds)

    def elapsed(self) -> float:
        """This run's wall time so far: since it started, less the time spent away."""
        return time.perf_counter() - self.started - self.away_seconds

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + max(0.0, seconds)

    @contextmanager
    def measure(self, phase: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)

    def as_dict(self, total: float | None = None) -> dict[str, float]:
        """Rounded seconds per phase in summary order, `other` (the rest of `total`) and `total`."""
        total = self.elapsed() if total is None else total
        ordered = [p for p in PHASES if p in self.seconds] + [p for p in self.seconds if p not in PHASES]
        out = {p: round(self.seconds[p], 2) for p in ordered}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 2)
        out["total"] = round(total, 2)
        return out

    def summary(self, label: str, total: float | None = None) -> str:
        table = self.as_dict(total)
        whole = table["total"] or 1.0
        lines = [f"timing ({label}, {table['total']:.1f}s in all)"]
        lines += [f"  {phase.replace('_', ' '):<16}{seconds:>8.1f}s {100 * seconds / whole:>4.0f}%"
                  for phase, seconds in table.items() if phase != "total"]
        return "\n".join(lines)


class Stopwatch:
    """Laps of the data stages: each lap logs its line and records its phase."""

    def __init__(self, log: Log, task: str, timings: Timings | None = None):
        self.log, self.task, self.timings, self.started = log, task, timings or Timings(), time.perf_counter()

    def lap(self, phase: str, message: str) -> None:
        now = time.perf_counter()
        self.log(f"[{self.task}] {phase}: {message} ({now - self.started:.1f}s)")
        self.timings.add(phase, now - self.started)
        self.started = now
