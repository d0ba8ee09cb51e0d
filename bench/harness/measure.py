"""What one scenario run measured, whichever driver produced it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Measurement:
    requests: int          # completed requests (a completed flow counts as one), successes and failures
    seconds: float         # the measured interval, warm-up excluded
    errors: int            # non-success responses and transport errors
    p50_ms: float
    p95_ms: float
    p99_ms: float
    first_error: str | None = None
    capped: bool = False   # ended by the request cap before the duration
    server_cpu_s: float | None = None  # CPU time the server used in the measured interval (all its processes)

    @property
    def per_cpu_second(self) -> float | None:
        """Requests served per second of server CPU: the rate one fully used core would reach."""
        return self.requests / self.server_cpu_s if self.server_cpu_s else None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(len(ordered) * p / 100))
    return ordered[rank - 1]
