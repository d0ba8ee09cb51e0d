"""The results of a run: one row per scenario and database, as a table, as JSON and as a PNG chart."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.measure import Measurement
from harness.server import MB

DATABASE_COLOURS = {"sqlite": "#4c72b0", "postgresql": "#dd8452"}


@dataclass
class Result:
    scenario: str                 # e.g. "jwks", "jwks (If-None-Match)", "client_credentials (2 workers)", "idle"
    title: str
    database: str
    workers: int
    driver: str                   # "wrk", "python" or "-" (idle)
    pinned: bool
    measurement: Measurement | None
    peak_rss: int                 # bytes: the largest of any one server process during the scenario
    peak_rss_total: int           # bytes: the largest sum over the server's processes
    rss_budget: int
    min_rps: float | None = None
    ratio: float | None = None    # scaling: this rate / the single-core rate of the same scenario
    # scaling: 2 x (requests per server CPU-second here) / (that of the one-core run): the rate two
    # fully used cores would reach, against one; what wrk's share of the 2 cores hides from ``ratio``.
    cpu_ratio: float | None = None
    min_ratio: float | None = None
    note: str = ""
    failure: str | None = None    # the scenario could not run (setup error, wrk failure)

    @property
    def budget(self) -> str:
        parts = []
        if self.min_rps is not None:
            parts.append(f"≥ {self.min_rps:g}/s")
        if self.min_ratio is not None:
            parts.append(f"≥ {self.min_ratio:g}x 1 core")
        parts.append(f"≤ {self.rss_budget // MB} MB")
        return ", ".join(parts)

    @property
    def passed(self) -> bool:
        m = self.measurement
        if self.failure is not None or self.peak_rss > self.rss_budget:
            return False
        if m is None:
            return self.driver == "-"  # the idle row has no load
        if m.errors or not m.requests:
            return False
        if self.min_rps is not None and m.rps < self.min_rps:
            return False
        scaled = self.cpu_ratio if self.cpu_ratio is not None else self.ratio
        return not (self.min_ratio is not None and (scaled is None or scaled < self.min_ratio))

    def as_json(self) -> dict[str, Any]:
        m = self.measurement
        row: dict[str, Any] = {
            "scenario": self.scenario, "title": self.title, "database": self.database, "workers": self.workers,
            "driver": self.driver, "pinned": self.pinned, "peak_rss_mb": round(self.peak_rss / MB, 1),
            "peak_rss_total_mb": round(self.peak_rss_total / MB, 1), "budget": self.budget,
            "min_rps": self.min_rps, "max_rss_mb": self.rss_budget // MB, "ratio_to_one_core": _round(self.ratio),
            "cpu_ratio_to_one_core": _round(self.cpu_ratio),
            "min_ratio": self.min_ratio, "passed": self.passed, "verdict": verdict(self), "note": self.note,
            "failure": self.failure,
        }
        if m is not None:
            row.update(requests=m.requests, seconds=round(m.seconds, 3), rps=round(m.rps, 1), errors=m.errors,
                       server_cpu_s=_round(m.server_cpu_s, 3), per_cpu_second=_round(m.per_cpu_second, 1),
                       p50_ms=_round(m.p50_ms), p95_ms=_round(m.p95_ms), p99_ms=_round(m.p99_ms),
                       capped=m.capped, first_error=m.first_error)
        return row


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


# ---- table ------------------------------------------------------------------------------------

HEADER = ["scenario", "database", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "peak RSS MB", "budget", "result"]


def verdict(r: Result) -> str:
    """PASS or FAIL, with why where it helps: the scaling ratio, a run ended by the request cap."""
    m = r.measurement
    if r.failure:
        return "FAIL (did not run)"
    if r.min_ratio is not None and r.ratio is None:
        return "n/a (no 1-core run)"
    text = "PASS" if r.passed else "FAIL"
    if r.cpu_ratio is not None and r.ratio is not None:
        return text + f" ({r.cpu_ratio:.2f}x per CPU, {r.ratio:.2f}x raw)"
    if r.ratio is not None:
        return text + f" ({r.ratio:.2f}x)"
    return text + " (cap)" if m is not None and m.capped else text


def _cells(r: Result) -> list[str]:
    m = r.measurement

    def ms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.1f}"

    load = ["-"] * 5 if m is None else [f"{m.rps:.0f}", ms(m.p50_ms), ms(m.p95_ms), ms(m.p99_ms), str(m.errors)]
    return [r.scenario, r.database, *load, f"{r.peak_rss / MB:.0f}", r.budget, verdict(r)]


def table(results: list[Result]) -> str:
    rows = [_cells(r) for r in results]
    widths = [max(len(HEADER[i]), *(len(row[i]) for row in rows)) for i in range(len(HEADER))]
    numeric = {2, 3, 4, 5, 6, 7}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in numeric else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(row) for row in rows)])


# ---- JSON -------------------------------------------------------------------------------------

def write_json(path: Path, results: list[Result], *, machine: dict[str, Any], settings: dict[str, Any],
               notes: list[str]) -> None:
    document = {"machine": machine, "settings": settings, "notes": notes,
                "results": [r.as_json() for r in results]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


# ---- chart ------------------------------------------------------------------------------------

def write_chart(path: Path, results: list[Result], subtitle: str) -> None:
    """Two panels: requests/s (budget as a black mark on each bar) and p99, per scenario and database."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    loaded = [r for r in results if r.measurement is not None and r.measurement.requests]
    scenarios = list(dict.fromkeys(r.scenario for r in loaded))
    databases = list(dict.fromkeys(r.database for r in loaded))
    if not scenarios:
        return
    width = 0.8 / len(databases)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(9.0, 1.25 * len(scenarios) + 3), 9), sharex=True)
    labelled: set[str] = set()  # one legend entry per database, and one for the budget mark
    for d, database in enumerate(databases):
        for s, scenario in enumerate(scenarios):
            row = next((r for r in loaded if r.scenario == scenario and r.database == database), None)
            if row is None or row.measurement is None:
                continue
            x = s - 0.4 + width * (d + 0.5)
            colour = DATABASE_COLOURS.get(database, "grey")
            label = None if database in labelled else database
            labelled.add(database)
            _bar(top, x, width, row.measurement.rps, colour, label, "{:.0f}")
            _bar(bottom, x, width, row.measurement.p99_ms, colour, None, "{:.0f}")
            budget = _rps_budget(row)
            if budget is not None:
                top.hlines(budget, x - width / 2, x + width / 2, colors="black", linewidth=2.5,
                           label=None if "budget" in labelled else "budget")
                labelled.add("budget")
    top.set_yscale("log")
    top.set_ylabel("requests/s (log)")
    top.set_title(f"authserver: throughput per scenario and database\n{subtitle}", fontsize=10)
    top.legend(loc="upper right", fontsize=8)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency, ms (log)")
    bottom.set_title("p99 latency (flow: the whole flow)", fontsize=10)
    bottom.set_xticks(range(len(scenarios)), [_wrap(s) for s in scenarios], fontsize=8)
    for axis in (top, bottom):
        axis.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bar(axis: Any, x: float, width: float, value: float, colour: str, label: str | None, fmt: str) -> None:
    if math.isnan(value) or value <= 0:
        return
    axis.bar(x, value, width, color=colour, label=label)
    axis.annotate(fmt.format(value), (x, value), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                  textcoords="offset points")


def _rps_budget(row: Result) -> float | None:
    """The rate the row must reach: its own budget, or for scaling the ratio times the one-core rate."""
    if row.min_rps is not None:
        return row.min_rps
    if row.min_ratio is not None and row.ratio and row.measurement is not None:
        return row.min_ratio * row.measurement.rps / row.ratio
    return None


def _wrap(scenario: str) -> str:
    return scenario.replace(" (", "\n(")
