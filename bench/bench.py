"""`make bench`: issue 9's performance budgets, measured on a real `authserver serve`, on SQLite and PostgreSQL.

    make bench [ARGS="--quick --database sqlite --scenario refresh ..."]
    .venv/bin/python bench/bench.py --help

What it measures, per scenario and database: requests/s, latency p50/p95/p99 as the client sees
it, errors (every response that is not the success the scenario expects, and transport errors),
and the server's peak RSS; each against its budget:

  metadata, jwks        GET, ≥ 8,000/s per core (also with If-None-Match when the server sends ETags)
  client_credentials    POST /token, Basic auth, scope and resource (compared with node-oidc-provider
                        by /work/shared/peer-bench/vs_peer.sh, so no absolute budget here)
  introspection         POST /introspect of an active access token by a confidential client
  refresh               refresh-token rotation, each request a fresh never-used token, ≥ 1,000/s on PostgreSQL
  signin                the POST of the sign-in form (argon2id), ≥ 30/s per core
  flow                  authorize → sign-in → consent → token with PKCE, ≥ 25/s per core (one flow = one request)
  idle                  RSS after start-up, before any load, ≤ 100 MB; under load ≤ 200 MB per process
  scaling               client_credentials and introspection on `serve --workers 2`, ≥ 1.8x the one-core rate

How:
- The database is a throw-away one (a SQLite file in a temporary directory, or a uniquely named
  PostgreSQL database at 127.0.0.1:5432 that is dropped at the end, also on Ctrl-C or an error),
  seeded through the CLI as an operator would (`authserver db upgrade`, `scopes create`,
  `resources create`, `clients create --json`, `users create`). The refresh scenario's tokens are
  minted beforehand with the server's domain code (bench/harness/mint.py): each can be used once.
- The server is started as a user would: `authserver serve --host 127.0.0.1 --port P`, with
  AUTHSERVER_ISSUER, AUTHSERVER_DATABASE_URL and AUTHSERVER_SECRET_KEY set, and stopped with SIGTERM.
- Pinning, as vs_peer.sh does: the server (one process) on CPU 1 (`taskset -c 1`), the load generator
  on CPU 0, 16 keep-alive connections. The scaling runs are unpinned: `--workers 2` and wrk share
  the two cores, which the table says. PostgreSQL itself is never pinned.
- Load: wrk (`-t1 -cN`, bench/wrk/bench.lua, which checks every response's status and body) for the
  fast endpoints; a Python driver (asyncio + httpx, N concurrent fresh browsers) for sign-in and the
  flow, which read pages and forms and run at tens per second.
- Each scenario: a short warm-up, then at most --duration seconds and at most --max-requests
  requests (refresh: the minted tokens; signin: the prepared sign-in pages), under a progress bar.
- Memory: VmRSS of the server process and its children read from /proc every 100 ms during
  each scenario; the peak of any one process is reported (the JSON also has the sum).

Output: the table on stdout, bench/results/<UTC time>.json (machine, settings, every figure) and
bench/results/<UTC time>.png (throughput and p99 per scenario and database). A complete run (every
scenario on both databases, not --quick) also copies them to docs/bench.json and docs/bench.png,
which the README shows. Exit status: 0 when every scenario ran without errors (a budget missed is
reported as FAIL in the table and JSON, not as an exit status), 1 when a scenario had errors or could
not run, 2 when the benchmark could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import scenarios, seed, server
from harness.report import Result, table, write_chart, write_json
from harness.scenarios import SCENARIOS, Settings, Target
from harness.server import RssSampler, Server, Workspace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
DATABASES = ("sqlite", "postgresql")
SCENARIO_CHOICES = [*SCENARIOS, "scaling"]
IDLE_SETTLE = 1.0  # seconds after the first health check before the idle RSS is read


# ---- options ----------------------------------------------------------------------------------

def positive(kind: type[int] | type[float]) -> Any:
    def parse(value: str) -> int | float:
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return number
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="bench/bench.py", description=doc.split("\n\n")[0],
        epilog="\n\n".join(doc.split("\n\n")[2:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=[*DATABASES, "both"], default="both",
                        help="where the server stores its data (default both; PostgreSQL is skipped with a "
                             "message when 127.0.0.1:5432 does not answer)")
    parser.add_argument("--scenario", action="append", choices=SCENARIO_CHOICES, metavar="NAME",
                        help=f"run only this scenario (repeatable; default all): {', '.join(SCENARIO_CHOICES)}")
    parser.add_argument("--duration", type=positive(float), metavar="S",
                        help="measured seconds per scenario (default 8; 3 with --quick)")
    parser.add_argument("--warmup", type=positive(float), metavar="S",
                        help="warm-up seconds per scenario, not measured (default 2; 1 with --quick)")
    parser.add_argument("--max-requests", type=positive(int), default=500_000, metavar="N",
                        help="request cap per scenario (default 500000)")
    parser.add_argument("--connections", type=positive(int), default=16, metavar="N",
                        help="keep-alive connections, or concurrent browsers for signin and flow (default 16)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin server and load generator to CPUs 1 and 0 (when taskset is unavailable "
                             "or the machine has one CPU)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario: a smoke check")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 8.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)
    return args


# ---- one database -----------------------------------------------------------------------------

class Run:
    """Every scenario on one database: seed, mint, serve, load, stop, clean up."""

    def __init__(self, database: str, names: list[str], settings: Settings, notes: list[str]) -> None:
        self.database, self.names, self.settings, self.notes = database, names, settings, notes
        self.results: list[Result] = []

    def execute(self) -> list[Result]:
        workspace = Workspace(self.database)
        try:
            port = server.free_port()
            env = server.server_env(workspace.url, port)
            seeded = seed.seed(env, workspace.dir)
            target = Target(self.database, f"http://127.0.0.1:{port}", seeded)
            preflight_refresh = self._mint(env, workspace, target) if "refresh" in self.names else None
            one_core = self.names != ["scaling"]
            if one_core:
                self._one_core(env, workspace, port, target, preflight_refresh)
            if "scaling" in self.names:
                self._scaling(env, workspace, port, target)
        finally:
            workspace.close()
        return self.results

    def _mint(self, env: dict[str, str], workspace: Workspace, target: Target) -> str:
        """Mint the refresh tokens (warm-up, measured, spares, one for the preflight) into files."""
        warm, main = scenarios.refresh_token_counts(self.settings)
        spares = 4 * self.settings.connections  # asked for by connections writing when wrk stops
        everything = workspace.dir / "refresh-all.txt"
        print(f"[{self.database}] minting {warm + main + 2 * spares + 1} refresh tokens ...", flush=True)
        seed.mint_refresh_tokens(env, workspace.dir, target.seeded, warm + main + 2 * spares + 1, everything)
        tokens = everything.read_text().split()
        target.refresh_warm, target.refresh_main = workspace.dir / "refresh-warm.txt", workspace.dir / "refresh.txt"
        target.refresh_warm.write_text("\n".join(tokens[1:1 + warm + spares]) + "\n")
        target.refresh_main.write_text("\n".join(tokens[1 + warm + spares:]) + "\n")
        target.refresh_warm_limit, target.refresh_limit = warm, main
        return tokens[0]

    def _start(self, env: dict[str, str], workspace: Workspace, port: int, *, workers: int,
               cpus: str | None) -> Server:
        started = Server(env, workspace.dir, port, workers=workers, cpus=cpus)
        started.wait_healthy()
        if workers > 1:
            self._wait_workers(started, workers)
        time.sleep(IDLE_SETTLE)
        return started

    @staticmethod
    def _wait_workers(started: Server, workers: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(server.descendants(started.proc.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.2)

    def _idle(self, started: Server, workers: int, pinned: bool) -> None:
        sampler = RssSampler(started.proc.pid)
        sampler.sample()
        name = "idle" if workers == 1 else f"idle ({workers} workers)"
        self.results.append(Result(name, "RSS after start-up, before load", self.database, workers, "-", pinned,
                                   None, sampler.memory.peak_process, sampler.memory.peak_total,
                                   scenarios.IDLE_RSS_BUDGET))

    def _one_core(self, env: dict[str, str], workspace: Workspace, port: int, target: Target,
                  preflight_refresh: str | None) -> None:
        s = self.settings
        started = self._start(env, workspace, port, workers=1, cpus=s.server_cpus)
        try:
            self._idle(started, 1, s.pin)
            etags = scenarios.preflight(target, preflight_refresh)
            if {"signin", "flow"} & set(self.names):
                scenarios.preflight_flow(target)
            for name in [n for n in SCENARIOS if n in self.names]:
                self._scenario(started, target, name, workers=1, cpus=s.load_cpus)
                path = scenarios.CONDITIONAL.get(name)
                if path is not None and path in etags:
                    self._scenario(started, target, name, workers=1, cpus=s.load_cpus, etag=etags[path])
                elif path is not None:
                    note = f"{path}: no ETag offered, so no If-None-Match scenario"
                    if note not in self.notes:
                        self.notes.append(note)
        finally:
            started.stop()

    def _scaling(self, env: dict[str, str], workspace: Workspace, port: int, target: Target) -> None:
        started = self._start(env, workspace, port, workers=2, cpus=None)
        try:
            self._idle(started, 2, False)
            scenarios.preflight(target, None)
            for name in scenarios.SCALED:
                self._scenario(started, target, name, workers=2, cpus=None)
        finally:
            started.stop()

    def _scenario(self, started: Server, target: Target, name: str, *, workers: int, cpus: str | None,
                  etag: str | None = None) -> None:
        spec = SCENARIOS[name]
        shown = name + (" (If-None-Match)" if etag else "") + (f" ({workers} workers)" if workers > 1 else "")
        label = f"{self.database:<10} {shown}"
        result = Result(shown, spec.title, self.database, workers, spec.driver, cpus is not None, None, 0, 0,
                        scenarios.LOAD_RSS_BUDGET, min_rps=spec.rps_budget(self.database) if workers == 1 else None,
                        note=spec.note)
        one: Result | None = None  # scaling: the one-core run of the same scenario
        if workers > 1:
            one = next((r for r in self.results if r.scenario == name and r.measurement), None)
            result.min_ratio = scenarios.SCALING_BUDGET
            result.note = ("unpinned: 2 workers and wrk share the 2 cores, so the raw ratio understates the server; "
                           "judged by requests per server CPU-second (2x that of one core = twice the rate)")
            if one is None:
                result.note += "; no one-core run of it to compare with"
        try:
            with RssSampler(started.proc.pid) as sampler:
                if spec.driver == "wrk":
                    result.measurement = scenarios.run_wrk(name, target, self.settings, label=label, cpus=cpus,
                                                           conditional_etag=etag, server_cpu=started.cpu_seconds)
                else:
                    result.measurement = scenarios.run_python(name, target, self.settings, label=label, cpus=cpus)
            result.peak_rss, result.peak_rss_total = sampler.memory.peak_process, sampler.memory.peak_total
        except (RuntimeError, OSError) as exc:
            result.failure = str(exc)[:2000]
        if workers > 1 and result.measurement and one is not None and one.measurement and one.measurement.rps:
            result.ratio = result.measurement.rps / one.measurement.rps
            two, single = result.measurement.per_cpu_second, one.measurement.per_cpu_second
            if two and single:
                # Each worker's efficiency against the single pinned process: 2 workers reach twice the
                # one-core rate exactly when each serves as many requests per CPU-second as it did.
                result.cpu_ratio = 2 * two / single
        if not started.alive():
            result.failure = f"the server exited during the scenario:\n{started.log_tail()}"
        self.results.append(result)
        print(f"  {label.strip():<48} {_summary(result)}", flush=True)
        if result.failure and not started.alive():
            raise RuntimeError(result.failure)


def _summary(result: Result) -> str:
    m = result.measurement
    if result.failure or m is None:
        return f"could not run: {(result.failure or '').splitlines()[0] if result.failure else '?'}"
    return (f"{m.rps:8.0f} req/s  p99 {m.p99_ms:7.1f} ms  errors {m.errors}  "
            f"peak RSS {result.peak_rss / server.MB:.0f} MB")


# ---- the machine ------------------------------------------------------------------------------

def _output(command: list[str], cwd: Path = ROOT) -> str:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=10,  # noqa: S603
                              check=False).stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    wrk_version = _output(["wrk", "--version"]).splitlines()
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "git_commit": _output(["git", "rev-parse", "HEAD"]),
            "git_dirty": bool(_output(["git", "status", "--porcelain", "--untracked-files=no"])),
            "wrk": wrk_version[0] if wrk_version else ""}


def check_tools(pin: bool) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk not found: `make bench` installs it (apt-get install wrk)")
    if pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        raise SystemExit("error: pinning needs taskset and 2 CPUs: run with --no-pin")


def databases(choice: str, notes: list[str]) -> list[str]:
    wanted = list(DATABASES) if choice == "both" else [choice]
    if "postgresql" in wanted:
        why = server.postgres_reachable()
        if why is not None:
            message = f"PostgreSQL at {server.PG_HOST}:{server.PG_PORT} is unreachable ({why}): skipped"
            print(message, file=sys.stderr)
            notes.append(message)
            wanted.remove("postgresql")
    return wanted


# ---- main -------------------------------------------------------------------------------------

def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` still runs every cleanup below
    # Ctrl-C as a plain KeyboardInterrupt, also inside the Python driver's event loop (asyncio.run
    # would make it a task cancellation); left alone where it is ignored (a background job).
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    settings = Settings(duration=args.duration, warmup=args.warmup, connections=args.connections,
                        max_requests=args.max_requests, pin=not args.no_pin)
    check_tools(settings.pin)
    notes: list[str] = []
    names = args.scenario or SCENARIO_CHOICES
    chosen = databases(args.database, notes)
    if not chosen:
        print("error: no database to run on", file=sys.stderr)
        return 2
    print(f"authserver benchmark: {', '.join(chosen)}; scenarios {', '.join(names)}; {settings.duration:g}s each "
          f"after {settings.warmup:g}s warm-up; {settings.connections} connections; "
          f"{'server on CPU 1, load on CPU 0' if settings.pin else 'unpinned'}", flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: list[Result] = []
    try:
        for database in chosen:
            results += Run(database, list(names), settings, notes).execute()
    finally:
        if results:
            report(results, stamp, settings, args, chosen, names, notes)
    return 1 if any(r.failure or (r.measurement and r.measurement.errors) for r in results) else 0


def report(results: list[Result], stamp: str, settings: Settings, args: argparse.Namespace, chosen: list[str],
           names: list[str], notes: list[str]) -> None:
    print()
    print(table(results))
    for r in results:
        if r.note and r.ratio is not None:
            print(f"note: {r.scenario} on {r.database}: {r.note}")
        if r.measurement and r.measurement.first_error:
            print(f"{r.scenario} on {r.database}: {r.measurement.errors} errors, first: {r.measurement.first_error}")
        if r.failure:
            print(f"{r.scenario} on {r.database}: {r.failure}")
    for note in notes:
        print(f"note: {note}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, png_path = RESULTS / f"{stamp}.json", RESULTS / f"{stamp}.png"
    info = machine()
    if "postgresql" in chosen:
        info["postgresql"] = server.postgres_version()
    used = {**asdict(settings), "quick": args.quick, "databases": chosen, "scenarios": names,
            "server_cpus": settings.server_cpus, "load_cpus": settings.load_cpus, "started_at": stamp}
    write_json(json_path, results, machine=info, settings=used, notes=notes)
    subtitle = (f"{info['cpu_model'] or 'CPU'} x {info['cpu_count']}, one server process on one core, "
                f"{settings.connections} connections, commit {info['git_commit'][:10]}")
    write_chart(png_path, results, subtitle)
    print(f"\nresults: {json_path.relative_to(ROOT)}, {png_path.relative_to(ROOT)}")
    complete = not args.quick and set(names) == set(SCENARIO_CHOICES) and set(chosen) == set(DATABASES)
    if complete and png_path.exists():
        shutil.copyfile(json_path, DOCS / "bench.json")
        shutil.copyfile(png_path, DOCS / "bench.png")
        print("copied to docs/bench.json and docs/bench.png (shown in the README)")
    else:
        print("docs/bench.png left as it is (only a complete run without --quick replaces it)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: the server is stopped and the temporary files and database removed", file=sys.stderr)
        sys.exit(130)
