"""``authserver serve``: uvicorn with the app factory, after the checks that are cheaper to fail once."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType
from typing import NoReturn

from authserver.cli.base import Commands, Context, report
from authserver.logconfig import uvicorn_log_config
from authserver.observe import metrics_directory
from authserver.settings import ConfigError, is_loopback_host, load_settings


def cmd_serve(ctx: Context, args: argparse.Namespace) -> None:
    import uvicorn

    derived = issuer_environment(args.host, args.port, os.environ)
    if derived:
        os.environ.update(derived)  # every worker's create_app_from_env reads it
        ctx.settings = load_settings()
    _require_schema_apart(ctx)  # first: no database yet must not leave a generated secret behind
    ctx.settings.resolved_secret_key()  # fail now, not in each worker
    # uvloop and httptools (uvicorn's fastest loop and parser, both dependencies) explicitly, so a
    # missing wheel fails loudly instead of falling back. The access log is off unless asked for:
    # it costs about 5 % of a token request, and the audit log records what matters.
    shorthand = proxy_environment(args.proxy_headers, os.environ)
    if shorthand:
        os.environ.update(shorthand)
        load_settings()  # a bad FORWARDED_ALLOW_IPS is one error line now, not one per worker
    # The access log writes no query strings and no interaction ids; the app's loggers follow
    # AUTHSERVER_LOG_LEVEL (see authserver.logconfig). No WebSocket support (``ws="none"``): the app
    # serves none, and uvicorn's WebSocket handshake lines (``"WebSocket /path?query" 403``, on its
    # error logger at INFO, and the websockets library's ``< GET /path?query`` at DEBUG) bypassed the
    # access log's redaction; an upgrade request is now an ordinary request, logged like one.
    # SIGTERM (what ``docker stop`` and systemd send) stops accepting connections at once and lets
    # requests in flight finish, for at most --timeout-graceful-shutdown seconds; then uvicorn
    # cancels what is left and the process exits, with status 0 (``stop_requested``).
    signal.signal(signal.SIGTERM, stop_requested)
    level, log_format = ctx.settings.log_level, ctx.settings.log_format
    # With JSON lines the app writes the access lines itself (route template, latency, request id).
    uvicorn_access_log = args.access_log and log_format == "text"
    with metrics_directory(args.workers, ctx.settings):  # --workers N: metrics added up across processes
        uvicorn.run("authserver.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=level, proxy_headers=False,
                    log_config=uvicorn_log_config(level, log_format, args.access_log),
                    server_header=False, loop="uvloop", http="httptools", ws="none", access_log=uvicorn_access_log,
                    timeout_graceful_shutdown=args.timeout_graceful_shutdown)


def stop_requested(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM outside uvicorn's own handler: before it starts, and again after its graceful
    shutdown, when uvicorn raises the signal it caught once more so that the previous handler
    runs (without this one the process would end "killed by SIGTERM", status 143, after a clean
    shutdown, and an orchestrator could not tell a clean stop from a crash). Stopping when asked
    to is success: exit 0. With ``--workers`` the supervisor handles the signal and exits 0 itself."""
    raise SystemExit(0)


def issuer_environment(host: str, port: int, environ: Mapping[str, str]) -> dict[str, str]:
    """What ``serve`` adds to the environment so that, without ``AUTHSERVER_ISSUER``, the issuer it
    advertises (metadata, ``iss``, every endpoint URL) is the address it listens on.

    Only a loopback address can be guessed: behind ``0.0.0.0`` or a public address the URL clients
    use (a name, a proxy, https) is unknowable here, and advertising ``127.0.0.1`` would hand every
    remote client URLs that point at itself; so that refuses to start, saying what to set.
    """
    if "AUTHSERVER_ISSUER" in environ:
        return {}
    if not is_loopback_host(host):
        raise ConfigError(f"AUTHSERVER_ISSUER is not set and --host {host} is not a loopback address: "
                          "set AUTHSERVER_ISSUER to the URL clients reach this server at "
                          "(e.g. https://auth.example.com)")
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return {"AUTHSERVER_ISSUER": f"http://{shown}:{port}"}


def proxy_environment(proxy_headers: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """What ``serve`` adds to the environment so that ``AUTHSERVER_TRUSTED_PROXIES`` is the one rule
    for whose ``X-Forwarded-For`` is believed (``net.client_address``, in every worker).

    uvicorn's own proxy handling is always off: it would rewrite the client address before our
    middleware sees it, under a different rule and a different setting. ``--proxy-headers`` stays
    as a shorthand: when ``AUTHSERVER_TRUSTED_PROXIES`` is unset it trusts ``FORWARDED_ALLOW_IPS``
    (uvicorn's variable, comma-separated; ``*`` is every address), else loopback.
    """
    if not proxy_headers or environ.get("AUTHSERVER_TRUSTED_PROXIES", "").strip():
        return {}
    allowed = [item.strip() for item in environ.get("FORWARDED_ALLOW_IPS", "").split(",") if item.strip()]
    if "*" in allowed:
        allowed = ["0.0.0.0/0", "::/0"]
    return {"AUTHSERVER_TRUSTED_PROXIES": json.dumps(allowed or ["127.0.0.1", "::1"])}


def _require_schema_apart(ctx: Context) -> None:
    """``require_schema`` in a forked child, so the server process never loads alembic (~10 MB
    of its idle RSS) nor keeps the connection the check opened; the child reports as ``main``."""
    if not hasattr(os, "fork"):
        ctx.require_schema()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit status
        code = 1
        try:
            ctx.require_schema()
            code = 0
        except Exception as exc:
            code = report(exc, ctx.out.as_json)
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(code if code > 0 else 1)  # the child said why


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds from 1 to 3600")
    return value


def register(commands: Commands) -> None:
    p = commands.command(commands.top, "serve", cmd_serve, "serve HTTP")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); any other than loopback needs AUTHSERVER_ISSUER")
    p.add_argument("--port", type=int, default=8000,
                   help="port to listen on (default 8000); without AUTHSERVER_ISSUER the issuer is "
                        "http://HOST:PORT")
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    p.add_argument("--timeout-graceful-shutdown", type=_seconds, default=20, metavar="SECONDS",
                   help="on SIGTERM, wait at most this long for requests in flight to finish (default 20)")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    p.add_argument("--proxy-headers", action="store_true",
                   help="shorthand: without AUTHSERVER_TRUSTED_PROXIES, believe X-Forwarded-For from the "
                        "addresses in FORWARDED_ALLOW_IPS (default loopback)")
