"""The server under test, started as a user would, on a throw-away database; and its memory.

Everything a run creates is removed by ``close``/``drop``: the temporary directory (SQLite file,
logs, minted tokens) and the uniquely named PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MB = 1024 * 1024


def authserver_command() -> str:
    """The `authserver` console script of this interpreter's environment (what `pip install` gives a user)."""
    beside = Path(sys.executable).parent / "authserver"
    found = str(beside) if beside.exists() else shutil.which("authserver")
    if not found:
        raise SystemExit("error: no `authserver` command: run `make bench` (it installs the package)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- databases --------------------------------------------------------------------------------

def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute(sql)


def postgres_version() -> str:
    import psycopg

    try:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return ""  # only informative, and asked for while reporting: never a reason to fail
    return str(row[0]) if row else ""


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers at 127.0.0.1:5432, else why not (one line)."""
    try:
        _pg_admin("SELECT 1")
    except Exception as exc:  # any driver or network error means "skip PostgreSQL"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


class Workspace:
    """A temporary directory and a database URL in it (SQLite) or beside it (a new PostgreSQL database)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.dir = Path(tempfile.mkdtemp(prefix=f"authserver-bench-{database}-"))
        self.pg_name: str | None = None
        if database == "postgresql":
            name = f"authserver_bench_{os.getpid()}_{secrets.token_hex(4)}"
            _pg_admin(f'CREATE DATABASE "{name}"')
            self.pg_name = name
            self.url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        else:
            self.url = f"sqlite:///{self.dir / 'authserver.db'}"

    def close(self) -> None:
        try:
            if self.pg_name is not None:
                _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
                self.pg_name = None
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def server_env(url: str, port: int) -> dict[str, str]:
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": url, "AUTHSERVER_SECRET_KEY": secrets.token_urlsafe(48),
           "AUTHSERVER_ISSUER": f"http://127.0.0.1:{port}",
           # Access logging off: the benchmark measures the server, not a log pipe to a file.
           "AUTHSERVER_LOG_LEVEL": "warning",
           # A few clients make every request of a load run: far past any per-client abuse limit.
           "AUTHSERVER_TOKEN_RATE_LIMIT": "0"}
    return env


def cli(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> Any:
    """Run ``authserver <args> --json`` as an operator would and return its JSON output."""
    done = subprocess.run([authserver_command(), *args, "--json"], env=env, cwd=cwd, input=stdin,  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"authserver {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout)


# ---- memory -----------------------------------------------------------------------------------

def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (/proc/<pid>/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15; the 3rd is index 0 here)
    return total / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (uvicorn's workers with --workers > 1), by parent id from /proc.

    /proc/<pid>/task/<tid>/children is not available on every kernel, so the parent ids are read.
    """
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the field after the state
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


@dataclass
class Memory:
    peak_process: int = 0  # the largest RSS of any one process of the server
    peak_total: int = 0    # the largest sum over the server's processes


class RssSampler:
    """Samples VmRSS of a process and its descendants every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.memory = Memory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        sizes = [s for s in (rss_bytes(p) for p in [self.pid, *descendants(self.pid)]) if s]
        if sizes:
            self.memory.peak_process = max(self.memory.peak_process, *sizes)
            self.memory.peak_total = max(self.memory.peak_total, sum(sizes))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# ---- the server -------------------------------------------------------------------------------

class Server:
    """`authserver serve --host 127.0.0.1 --port P [--workers N]`, optionally behind `taskset -c CPU`."""

    def __init__(self, env: dict[str, str], cwd: Path, port: int, *, workers: int = 1,
                 cpus: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.workers = workers
        self.log_path = cwd / f"server-{port}.log"
        self._log = self.log_path.open("wb")
        command = [authserver_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]  # taskset execs: the pid stays the server's
        self.proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=self._log,  # noqa: S603
                                     stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 60.0) -> None:
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

    def cpu_seconds(self) -> float:
        """CPU time used by the server and its workers so far."""
        return cpu_seconds([self.proc.pid, *descendants(self.proc.pid)])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown, which also stops its workers), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
