"""Packaging: docker-compose.yml, the Dockerfile and .dockerignore agree with the code (no Docker needed).

Also keeps the README honest: every setting and every CLI command is documented.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from authserver.app import TEMPLATES
from authserver.cli import build_parser
from authserver.cli.db import cmd_db_upgrade
from authserver.cli.serve import cmd_serve
from authserver.migrate import MIGRATIONS
from authserver.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
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


# ---- docker-compose.yml ---------------------------------------------------------------------

def test_compose_has_the_app_and_postgres_16(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"app", "postgres"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["app"]["build"] == "."
    assert services["app"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_every_authserver_variable_is_a_setting(compose: dict[str, Any]) -> None:
    used = set(re.findall(r"AUTHSERVER_[A-Z_]+", COMPOSE.read_text() + DOCKERFILE.read_text()))
    used |= {name for name in compose["services"]["app"]["environment"] if name.startswith("AUTHSERVER_")}
    assert {"AUTHSERVER_ISSUER", "AUTHSERVER_DATABASE_URL", "AUTHSERVER_SECRET_KEY"} <= used
    assert used <= _setting_variables(), used - _setting_variables()


def test_secret_key_must_be_given(compose: dict[str, Any]) -> None:
    environment = compose["services"]["app"]["environment"]
    assert re.fullmatch(r"\$\{AUTHSERVER_SECRET_KEY:\?[^}]+\}", environment["AUTHSERVER_SECRET_KEY"])
    with pytest.raises(KeyError, match="AUTHSERVER_SECRET_KEY"):
        _interpolate(environment["AUTHSERVER_SECRET_KEY"], {})


def test_app_environment_makes_valid_postgresql_settings(compose: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    app, postgres = compose["services"]["app"], compose["services"]["postgres"]
    secret = "s" * 48
    environment = {k: _interpolate(str(v), {"AUTHSERVER_SECRET_KEY": secret}) for k, v in app["environment"].items()}
    url = make_url(environment["AUTHSERVER_DATABASE_URL"])
    pg_env = {k: _interpolate(str(v), {}) for k, v in postgres["environment"].items()}
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (url.username, url.password, url.database) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"],
                                                          pg_env["POSTGRES_DB"])
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"AUTHSERVER_{name.upper()}", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.database_url == environment["AUTHSERVER_DATABASE_URL"]
    assert settings.resolved_secret_key() == secret
    # Behind a proxy the issuer becomes https; the same secret must then still be accepted.
    monkeypatch.setenv("AUTHSERVER_ISSUER", "https://auth.example.com")
    assert load_settings().resolved_secret_key() == secret


def test_app_migrates_then_serves_on_all_interfaces_behind_a_proxy(compose: dict[str, Any]) -> None:
    command = compose["services"]["app"]["command"]
    assert command[:2] == ["sh", "-c"]
    steps = [shlex.split(step) for step in command[2].split("&&")]
    assert steps[0] == ["authserver", "db", "upgrade"]
    assert steps[1][:2] == ["exec", "authserver"]
    upgrade = build_parser().parse_args(steps[0][1:])
    serve = build_parser().parse_args(steps[1][2:])
    assert upgrade.func is cmd_db_upgrade
    assert serve.func is cmd_serve
    assert (serve.host, serve.proxy_headers) == ("0.0.0.0", True)
    ports = compose["services"]["app"]["ports"]
    assert ports == [f"127.0.0.1:{serve.port}:{serve.port}"]


def test_app_healthcheck_calls_healthz_with_python(compose: dict[str, Any]) -> None:
    healthcheck = compose["services"]["app"]["healthcheck"]
    kind, program, flag, code = healthcheck["test"]
    assert (kind, program, flag) == ("CMD", "python", "-c")  # the slim image has no curl
    compile(code, "healthcheck", "exec")
    port = build_parser().parse_args(["serve"]).port
    assert f"http://127.0.0.1:{port}/healthz" in code


def test_healthz_answers(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


# ---- Dockerfile and .dockerignore -----------------------------------------------------------

def test_dockerfile_builds_from_python_311_slim_with_the_constraints() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [args for op, args in instructions if op == "RUN"]
    install = next(r for r in runs if "pip install" in r)
    words = shlex.split(install)
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert "-e" in words and words[words.index("-e") + 1] == "."  # keeps migrations/ and templates/ findable
    (cmd,) = [json_args for op, json_args in instructions if op == "CMD"]
    args = yaml.safe_load(cmd)
    assert args[0] == "authserver"
    assert build_parser().parse_args(args[1:]).func is cmd_serve
    assert ("USER", "authserver") in instructions


def _copied() -> list[str]:
    sources = []
    for op, args in _dockerfile_instructions():
        if op in ("COPY", "ADD"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += words[:-1]
    return sources


def test_dockerfile_copies_only_files_that_exist_and_everything_the_package_needs() -> None:
    sources = _copied()
    for source in sources:
        assert (ROOT / source).exists(), source
    needed = {"pyproject.toml", "constraints.txt", "authserver", MIGRATIONS.relative_to(ROOT).parts[0],
              TEMPLATES.relative_to(ROOT).parts[0]}
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


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in _copied():
        assert not _ignored(source, patterns), source
    for local in (".venv", ".git", "authserver.db", "authserver.db-wal", "authserver.secret",
                  "authserver/__pycache__", "authserver.egg-info"):
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
