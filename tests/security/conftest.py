"""Hypothesis profiles for the property and schema tests in this folder.

``ci`` (chosen when ``CI`` is set): derandomized, so a CI run tries the same examples every time
and a failure reproduces from the log alone; no example database is written. ``dev``: random,
with the example database, so local runs keep exploring and replay what failed last.
Each test bounds its own ``max_examples``; ``deadline`` is off because 2 shared cores make
timings noisy.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
