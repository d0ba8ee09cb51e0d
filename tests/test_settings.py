"""Settings refuse unsafe configurations."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from authserver.settings import ConfigError, Settings, load_settings


def test_plain_http_issuer_off_loopback_is_refused() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(issuer="http://auth.example.com")


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8000", "http://localhost:9000", "http://[::1]:8000"])
def test_loopback_http_issuer_is_allowed(issuer: str) -> None:
    assert load_settings(issuer=issuer).issuer == issuer


def test_issuer_with_query_is_refused() -> None:
    with pytest.raises(ConfigError):
        load_settings(issuer="https://auth.example.com/?tenant=a")


def test_https_issuer_refuses_the_development_secret(tmp_path: Path) -> None:
    settings = Settings(issuer="https://auth.example.com", database_url=f"sqlite:///{tmp_path}/a.db")
    with pytest.raises(ConfigError, match="AUTHSERVER_SECRET_KEY"):
        settings.resolved_secret_key()
    assert not (tmp_path / "authserver.secret").exists()


def test_https_issuer_refuses_a_short_secret(tmp_path: Path) -> None:
    settings = Settings(issuer="https://auth.example.com", secret_key="short")
    with pytest.raises(ConfigError, match="32"):
        settings.resolved_secret_key()


def test_development_secret_is_generated_once_into_a_0600_file(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db")
    first = settings.resolved_secret_key()
    path = tmp_path / "authserver.secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings.resolved_secret_key() == first
    assert len(first) >= 48


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("AUTHSERVER_CIMD_ALLOWED_HOSTS", "notjson", "AUTHSERVER_CIMD_ALLOWED_HOSTS: not valid JSON"),
    ("AUTHSERVER_CIMD_DENIED_HOSTS", "x", "AUTHSERVER_CIMD_DENIED_HOSTS: not valid JSON"),
    ("AUTHSERVER_LOG_LEVEL", "verbose", "AUTHSERVER_LOG_LEVEL: unknown log level 'verbose'"),
    ("AUTHSERVER_DATABASE_URL", "not a url", "AUTHSERVER_DATABASE_URL: not a database URL"),
    ("AUTHSERVER_DATABASE_URL", "mysql://db/authserver", "AUTHSERVER_DATABASE_URL: unsupported database 'mysql'"),
    # A node may not keep a revoked token's verdict (or a disabled client) for longer than 5 s.
    ("AUTHSERVER_CACHE_SECONDS", "10", "AUTHSERVER_CACHE_SECONDS: Input should be less than or equal to 5"),
    ("AUTHSERVER_CACHE_SECONDS", "-1", "AUTHSERVER_CACHE_SECONDS: Input should be greater than or equal to 0"),
    ("AUTHSERVER_AUDIT_FLUSH_SECONDS", "0", "AUTHSERVER_AUDIT_FLUSH_SECONDS: Input should be greater than 0"),
    ("AUTHSERVER_AUDIT_FLUSH_SECONDS", "60", "AUTHSERVER_AUDIT_FLUSH_SECONDS: Input should be less than or equal"),
    ("AUTHSERVER_ARGON2_CONCURRENCY", "0", "AUTHSERVER_ARGON2_CONCURRENCY: Input should be greater than or equal to 1"),
])
def test_unusable_environment_values_are_one_config_error(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                          value: str, message: str) -> None:
    """What the CLI prints as its one ``error:`` line, never a traceback."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_log_level_is_case_insensitive() -> None:
    assert load_settings(log_level="DEBUG").log_level == "debug"


@pytest.mark.parametrize("logo", [
    "http://cdn.example.com/logo.png",  # mixed content, and not covered by the CSP
    "javascript:alert(1)",
    "https://user@cdn.example.com/logo.png",
    "https://cdn.example.com/logo.png\"><script>",
    "https://cdn.example.com/a logo.png",
    "https://*.example.com/logo.png",
    "/static/../../etc/passwd",
    "/static/no-such-logo.png",
    "/etc/passwd",
    "data:text/html;base64,PHNjcmlwdD4=",
    "data:image/svg+xml,<svg onload=alert(1)>",
])
def test_a_logo_from_anywhere_else_is_refused(logo: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSERVER_LOGO_URL"):
        load_settings(logo_url=logo)


def test_logo_forms_and_the_origin_the_csp_must_allow() -> None:
    ours = load_settings(issuer="https://auth.example.com/tenant", secret_key="s" * 40, logo_url="/static/favicon.svg")
    assert (ours.logo_src(), ours.logo_origin) == ("/tenant/static/favicon.svg", None)
    remote = load_settings(logo_url="https://CDN.example.com:8443/brand/logo.png?v=2")
    assert remote.logo_src() == "https://CDN.example.com:8443/brand/logo.png?v=2"
    assert remote.logo_origin == "https://cdn.example.com:8443"
    inline = load_settings(logo_url="data:image/png;base64,iVBORw0KGgo=")
    assert (inline.logo_src(), inline.logo_origin) == ("data:image/png;base64,iVBORw0KGgo=", None)
    assert load_settings(logo_url="").logo_src() is None


@pytest.mark.parametrize("name", ["", "   ", "Acme\nSecurity", "Acme\u202eytiruceS"])
def test_display_name_is_one_line_of_text(name: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSERVER_DISPLAY_NAME"):
        load_settings(display_name=name)
    assert load_settings(display_name="  Acme <Sign-in>  ").display_name == "Acme <Sign-in>"
