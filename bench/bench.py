"""Benchmark the hot endpoints of a real authserver process: JWKS, metadata, token, introspection.

    python bench/bench.py [--requests N] [--concurrency C] [--max-seconds S]
                          [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/authserver_bench]

Everything happens in a throw-away temporary directory: a fresh SQLite database (or, with
--database-url, a uniquely named PostgreSQL database created on that server and dropped at
the end), seeded through the CLI (`init`, a scope, a resource, a client_credentials client and
a resource-server client with --introspect), then `authserver serve` on a free 127.0.0.1 port.
Each endpoint gets at most N requests and at most S seconds, from C threads with one keep-alive
connection each. The server is always stopped and the temporary files and database removed.

Reported per endpoint: completed requests, errors (non-2xx or transport), requests/s, latency
percentiles as seen by the client, and the server process's CPU time (utime+stime from
/proc/<pid>/stat, all threads) per request. The client runs on the same machine, so on few
cores the req/s column is bounded by client and server together; CPU/request is the server's alone.
Only loopback traffic: the resource URI below is an identifier and is never contacted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

RESOURCE = "https://bench.invalid/mcp"  # never contacted: .invalid does not resolve (RFC 6761)
SCOPE = "bench.read"
WARMUP = 50
HTTP_TIMEOUT = 10.0


# ---- the server and its database --------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresDatabase:
    """A uniquely named database on the server of ``server_url``, created now and dropped by ``drop``.

    The database named in the URL, if any, is only the prefix of the new name; the maintenance
    connection goes to the ``postgres`` database.
    """

    def __init__(self, server_url: str) -> None:
        from sqlalchemy.engine import make_url

        url = make_url(server_url)
        if url.get_backend_name() != "postgresql":
            raise SystemExit(f"error: --database-url must be a PostgreSQL URL, not {url.drivername}")
        if url.host not in (None, "127.0.0.1", "localhost", "::1"):
            raise SystemExit("error: the benchmark talks to 127.0.0.1 only")
        self.name = f"{url.database or 'authserver_bench'}_{os.getpid()}_{secrets.token_hex(4)}".lower()
        self._admin = url.set(drivername="postgresql+psycopg", database="postgres")
        self.url = url.set(drivername="postgresql+psycopg", database=self.name).render_as_string(
            hide_password=False)
        self._execute(f'CREATE DATABASE "{self.name}"')
        self.created = True

    def _execute(self, sql: str) -> None:
        import psycopg

        u = self._admin
        with psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
                             password=u.password, dbname=u.database, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def drop(self) -> None:
        if self.created:
            self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False


def cli(env: dict[str, str], cwd: Path, *args: str) -> Any:
    """Run ``authserver <args> --json`` and return its JSON output."""
    done = subprocess.run([sys.executable, "-m", "authserver.cli", *args, "--json"], env=env, cwd=cwd,  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"authserver {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout)


@dataclass
class Seeded:
    client_id: str
    client_secret: str
    rs_id: str
    rs_secret: str


def seed(env: dict[str, str], cwd: Path) -> Seeded:
    cli(env, cwd, "init")
    cli(env, cwd, "scopes", "create", SCOPE, "--description", "Benchmark read access")
    cli(env, cwd, "resources", "create", RESOURCE, "--name", "Benchmark resource", "--scope", SCOPE)
    m2m = cli(env, cwd, "clients", "create", "--name", "bench machine client", "--grant-type", "client_credentials",
              "--scope", SCOPE, "--resource", RESOURCE)
    rs = cli(env, cwd, "clients", "create", "--name", "bench resource server", "--introspect",
             "--resource", RESOURCE)
    return Seeded(m2m["client_id"], m2m["client_secret"], rs["client_id"], rs["client_secret"])


class Server:
    def __init__(self, env: dict[str, str], cwd: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = cwd / "server.log"
        self._log = self.log_path.open("wb")
        # Access logging off (log level warning): the benchmark measures the app, not a log pipe.
        self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and fixed arguments)
            [sys.executable, "-m", "authserver.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**env, "AUTHSERVER_LOG_LEVEL": "warning"}, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"the server did not become healthy in {timeout:.0f}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """utime + stime of the server process (every thread), from /proc; None where unavailable."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is field 3 (state)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


# ---- the load ---------------------------------------------------------------------------------

Send = Callable[[httpx.Client], httpx.Response]


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    cpu: float | None = None
    capped: bool = False

    @property
    def completed(self) -> int:
        return len(self.latencies) + self.errors


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def run_load(server: Server, name: str, send: Send, requests: int, concurrency: int, max_seconds: float) -> Result:
    result = Result(name)
    lock = threading.Lock()
    issued = 0
    start = 0.0
    deadline = 0.0

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= requests or time.perf_counter() >= deadline:
                return False
            issued += 1
            return True

    def worker(client: httpx.Client) -> None:
        latencies: list[float] = []
        errors: list[str] = []
        while take():
            t0 = time.perf_counter()
            try:
                response = send(client)
                ok = response.is_success
                detail = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors.append(detail)
        with lock:
            result.latencies.extend(latencies)
            result.errors += len(errors)
            if errors and result.first_error is None:
                result.first_error = errors[0]

    clients = [httpx.Client(base_url=server.base, timeout=HTTP_TIMEOUT,
                            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
               for _ in range(concurrency)]
    try:
        for client in clients:  # open every connection before the clock starts
            send(client).raise_for_status()
        threads = [threading.Thread(target=worker, args=(client,), daemon=True) for client in clients]
        cpu_before = server.cpu_seconds()
        start = time.perf_counter()
        deadline = start + max_seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max_seconds + HTTP_TIMEOUT + 5)
        result.elapsed = time.perf_counter() - start
        cpu_after = server.cpu_seconds()
        if cpu_before is not None and cpu_after is not None:
            result.cpu = cpu_after - cpu_before
        result.capped = result.completed < requests
    finally:
        for client in clients:
            client.close()
    result.latencies.sort()
    return result


def basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: form-urlencode each part before Basic encoding.
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def endpoints(server: Server, seeded: Seeded) -> list[tuple[str, Send]]:
    form = {"content-type": "application/x-www-form-urlencoded"}
    token_headers = {**form, "authorization": basic(seeded.client_id, seeded.client_secret)}
    rs_headers = {**form, "authorization": basic(seeded.rs_id, seeded.rs_secret)}

    with httpx.Client(base_url=server.base, timeout=HTTP_TIMEOUT) as client:
        issued = client.post("/token", content=b"grant_type=client_credentials", headers=token_headers)
        if issued.status_code != 200 or "access_token" not in issued.json():
            raise RuntimeError(f"cannot get a token: HTTP {issued.status_code} {issued.text[:300]}")
        token = issued.json()["access_token"]
        introspect_body = f"token={token}&token_type_hint=access_token".encode()
        seen = client.post("/introspect", content=introspect_body, headers=rs_headers)
        if seen.status_code != 200 or seen.json().get("active") is not True:
            raise RuntimeError(f"introspection does not see the token: HTTP {seen.status_code} {seen.text[:300]}")
        for path in ("/jwks.json", "/.well-known/oauth-authorization-server"):
            got = client.get(path)
            if got.status_code != 200:
                raise RuntimeError(f"GET {path}: HTTP {got.status_code}")

    return [
        ("GET /jwks.json", lambda c: c.get("/jwks.json")),
        ("GET /.well-known/oauth-authorization-server", lambda c: c.get("/.well-known/oauth-authorization-server")),
        ("POST /token (client_credentials)",
         lambda c: c.post("/token", content=b"grant_type=client_credentials", headers=token_headers)),
        ("POST /introspect", lambda c: c.post("/introspect", content=introspect_body, headers=rs_headers)),
    ]


# ---- report -----------------------------------------------------------------------------------

def table(results: list[Result]) -> str:
    header = ["endpoint", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "server CPU ms/req"]
    rows = []
    for r in results:
        ok = r.latencies
        cpu = "n/a" if r.cpu is None or not r.completed else f"{1000 * r.cpu / r.completed:.2f}"
        rows.append([
            r.name + (" (time cap)" if r.capped else ""), str(r.completed), str(r.errors),
            f"{r.completed / r.elapsed:.0f}" if r.elapsed else "-",
            *(f"{1000 * percentile(ok, p):.2f}" for p in (50, 95, 99)), cpu,
        ])
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


# ---- main -------------------------------------------------------------------------------------

def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=positive_int, default=2000, help="requests per endpoint (default 2000)")
    parser.add_argument("--concurrency", type=positive_int, default=8,
                        help="client threads, one connection each (default 8)")
    parser.add_argument("--max-seconds", type=positive_float, default=30.0,
                        help="time cap per endpoint (default 30)")
    parser.add_argument("--database-url", metavar="URL",
                        help="a PostgreSQL server URL (postgresql+psycopg://postgres@127.0.0.1:5432/NAME); "
                             "a uniquely named database is created there and dropped at the end "
                             "(default: SQLite in a temporary directory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `kill` of the benchmark still runs the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="authserver-bench-"))
    pg: PostgresDatabase | None = None
    server: Server | None = None
    try:
        if args.database_url:
            pg = PostgresDatabase(args.database_url)
            database_url, backend = pg.url, f"PostgreSQL (database {pg.name}, dropped at the end)"
        else:
            database_url, backend = f"sqlite:///{tmp / 'authserver.db'}", "SQLite (temporary file)"
        port = free_port()
        env = {**os.environ, "AUTHSERVER_DATABASE_URL": database_url,
               "AUTHSERVER_SECRET_KEY": secrets.token_urlsafe(48),
               "AUTHSERVER_ISSUER": f"http://127.0.0.1:{port}"}
        env.pop("AUTHSERVER_LOG_LEVEL", None)
        seeded = seed(env, tmp)
        server = Server(env, tmp, port)
        server.wait_healthy()
        targets = endpoints(server, seeded)

        print(f"authserver benchmark: {backend}; {args.requests} requests per endpoint "
              f"(cap {args.max_seconds:g}s), concurrency {args.concurrency}; "
              f"1 uvicorn worker; Python {platform.python_version()}; {os.cpu_count()} CPUs", flush=True)
        results = []
        for name, send in targets:
            with httpx.Client(base_url=server.base, timeout=HTTP_TIMEOUT) as warm:
                for _ in range(WARMUP):
                    send(warm)
            results.append(run_load(server, name, send, args.requests, args.concurrency, args.max_seconds))
        print(table(results))
        failed = [r for r in results if r.errors]
        for r in failed:
            print(f"{r.name}: {r.errors} errors, first: {r.first_error}", file=sys.stderr)
        if server.proc.poll() is not None:
            print(f"the server exited during the run:\n{server.log_tail()}", file=sys.stderr)
            return 1
        return 1 if failed else 0
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if pg is not None:
                pg.drop()


if __name__ == "__main__":
    sys.exit(main())
