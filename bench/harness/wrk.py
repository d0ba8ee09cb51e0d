"""Running wrk (one thread, N keep-alive connections) with bench/wrk/bench.lua, under a progress bar.

wrk is C and event-driven: one core of it saturates a Python server many times over, which no
Python load generator can promise at thousands of requests per second. Its Lua script counts
non-success responses (status and body) itself; wrk's own error counters add transport errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from harness.measure import Measurement

SCRIPT = Path(__file__).resolve().parent.parent / "wrk" / "bench.lua"
TICK = 0.1
# A wrk run gets this long beyond its -d before it is considered hung and killed.
GRACE = 30.0


@dataclass(frozen=True)
class Load:
    """One wrk run: what to send, and what counts as success."""

    url: str
    method: str = "GET"
    body: str = ""
    authorization: str = ""
    if_none_match: str = ""
    ok_status: int = 200
    expect: str = ""
    tokens: Path | None = None  # single-use tokens, one per request (body = token_prefix + token)
    token_prefix: str = ""
    limit: int = 0              # the request cap (with tokens: hand out at most this many)

    def env(self) -> dict[str, str]:
        return {"BENCH_METHOD": self.method, "BENCH_BODY": self.body, "BENCH_AUTH": self.authorization,
                "BENCH_IF_NONE_MATCH": self.if_none_match, "BENCH_OK_STATUS": str(self.ok_status),
                "BENCH_EXPECT": self.expect, "BENCH_TOKENS": str(self.tokens or ""),
                "BENCH_BODY_PREFIX": self.token_prefix, "BENCH_LIMIT": str(self.limit)}


_FIELD = re.compile(r"(\w+)=([\d.]+)")


def parse(stdout: str) -> tuple[dict[str, float], str]:
    """The RESULT fields and the first unsuccessful response (FIRST_BAD) printed by bench.lua's done()."""
    result = next((line for line in stdout.splitlines() if line.startswith("RESULT ")), None)
    if result is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{stdout[-2000:]}")
    first_bad = next((line[len("FIRST_BAD "):].strip() for line in stdout.splitlines()
                      if line.startswith("FIRST_BAD ")), "")
    return {k: float(v) for k, v in _FIELD.findall(result)}, first_bad


def command(load: Load, duration: float, connections: int, cpus: str | None) -> list[str]:
    # wrk's -d takes whole seconds; -t1 keeps one Lua state, which the single-use token counter needs.
    wrk = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
           "-s", str(SCRIPT), load.url]
    return ["taskset", "-c", cpus, *wrk] if cpus is not None else wrk


def run(load: Load, *, duration: float, connections: int, cpus: str | None, label: str | None) -> Measurement:
    """Run wrk for ``duration`` seconds (or until the request cap); a progress bar ticks on elapsed time."""
    lines: list[tuple[float, str]] = []  # (when read, line): a capped run is timed by its STOPPED line
    start = time.monotonic()
    proc = subprocess.Popen(command(load, duration, connections, cpus), env={**os.environ, **load.env()},  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = threading.Thread(target=_read, args=(proc, lines), daemon=True)
    reader.start()
    try:
        _tick(proc, start, duration, label)
        proc.wait(timeout=GRACE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    stdout = "".join(line for _, line in lines)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with status {proc.returncode}:\n{stdout[-2000:]}")
    fields, first_bad = parse(stdout)
    stopped = next((when for when, line in lines if line.startswith("STOPPED")), None)
    transport = sum(int(fields[k]) for k in ("connect", "read", "write", "timeout"))
    # bench.lua counts every response that is not a success ("bad"); wrk's "status" (>= 400) is a subset.
    return Measurement(requests=int(fields["requests"]),
                       seconds=stopped - start if stopped is not None else fields["duration_s"],
                       errors=int(fields["bad"]) + transport, p50_ms=fields["p50_ms"], p95_ms=fields["p95_ms"],
                       p99_ms=fields["p99_ms"], first_error=first_bad or None, capped=stopped is not None)


def _read(proc: subprocess.Popen[str], lines: list[tuple[float, str]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.monotonic(), line))


def _tick(proc: subprocess.Popen[str], start: float, duration: float, label: str | None) -> None:
    """Wait for wrk, advancing a bar of ``duration`` seconds; wrk reports nothing while it runs."""
    deadline = start + duration + GRACE
    with tqdm(total=round(duration, 1), desc=label, unit="s", disable=label is None, leave=False,
              bar_format="{desc:<38} {bar} {n:.1f}/{total:.0f}s") as bar:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(TICK)
            bar.update(min(duration, time.monotonic() - start) - bar.n)
