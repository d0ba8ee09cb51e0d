"""The README's code is the code the tests run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from authserver.resource import mcp_sdk
from tests.test_resource_kit import _docstring_example

README = Path(__file__).resolve().parent.parent / "README.md"


def test_ten_line_example_is_the_tested_sdk_example() -> None:
    """tests/test_resource_kit.py executes mcp_sdk's docstring example end to end; the README shows that code."""
    text = README.read_text()
    section = text.split("### Protect your MCP server in 10 lines", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    assert block.group(1).strip() == _docstring_example(mcp_sdk.__doc__).strip()


def test_quick_start_shows_the_two_commands_first() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.splitlines() if line.startswith("make ")]
    assert commands == ["make run", "make test"]


def _operations_block() -> list[str]:
    section = README.read_text().split("## Operations", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_operations_commands_run(tmp_path: Path) -> None:
    """The Operations section's shell lines, as one script on a fresh SQLite database, on free ports
    instead of 8000/8001: a background server is waited for; what follows forever (``audit tail``, a
    server in the foreground) runs 10 s under ``timeout`` (time to start even on a busy machine) and
    must still be running then."""
    lines = _operations_block()
    assert any(line.startswith("authserver audit purge") for line in lines)
    port, json_port = _free_port(), _free_port()
    script = ["set -euo pipefail", "authserver init > /dev/null"]
    for line in lines:
        line = line.split("  #")[0].strip().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        if line.endswith("&"):  # the server in the background: on its port, waited for, stopped at the end
            script += [f"{line[:-1].strip()} --port {port} > serve.log 2>&1 & server=$!",
                       "trap 'kill $server; wait $server || true' EXIT",
                       f"for _ in $(seq 150); do curl -fs http://127.0.0.1:{port}/healthz > /dev/null && break; "
                       "sleep 0.2; done"]
        elif " tail " in f" {line} " or re.search(r"authserver serve(?!.*&)", line):
            line = line.replace("--port 8001", f"--port {json_port}")
            env, _, command = line.rpartition("authserver ")
            script.append(f"{env}timeout 10 authserver {command} > follow.log 2>&1 || [ $? = 124 ]")
            script.append("cat follow.log")
        else:
            script.append(line)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    environment.update(PATH=f"{Path(sys.executable).parent}:{environment['PATH']}", AUTHSERVER_HOME=str(tmp_path),
                       AUTHSERVER_SECRET_KEY="readme-secret-0123456789-abcdefghijklmnopqrstuvwxyz")
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, (result.stdout, result.stderr, "\n".join(script))
    out = result.stdout
    assert '"status":"ready"' in out, out
    assert "authserver_http_requests_total{" in out
    assert "deleted 0 audit events older than 90 days" in out
    # audit list --type user.created --json: init's first admin, as a JSON line
    listed = [json.loads(line) for line in out.splitlines() if line.startswith('{"id"')]
    assert any(row["event"] == "user.created" and row["actor"] == "cli" for row in listed), out
    # The JSON server ran (its start-up lines are JSON objects); tail followed until stopped.
    json_lines = [line for line in (tmp_path / "follow.log").read_text().splitlines() if line.strip()]
    assert json_lines and all(json.loads(line)["logger"] for line in json_lines), json_lines
