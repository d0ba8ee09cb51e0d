"""The application factory. Nothing is built at import time: ``create_app(settings)``
makes an app bound to one database, so tests can run apps on SQLite and PostgreSQL
side by side.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from authserver import observe, readiness
from authserver.db import Database
from authserver.errors import install_error_handlers
from authserver.fastlane import AuthServer, HotRoutes
from authserver.middleware import BodyLimit, HeaderLimit, PublicCORS, RegistrationCORS, SecurityHeaders, TrustedProxies
from authserver.net import parse_networks
from authserver.services import build_services
from authserver.settings import Settings, load_settings
from authserver.tokens.purge import run_periodically
from authserver.web import i18n

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "templates" / "static"

log = logging.getLogger("authserver")


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    services = build_services(settings, db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.keys.ensure_key()
        log.info("authserver serving issuer %s", settings.issuer)
        # Everything built so far lives as long as the process: move it out of the collector's
        # sight, so full collections under load scan only what requests allocate (shorter pauses).
        gc.freeze()
        stop = asyncio.Event()
        purging = asyncio.create_task(run_periodically(services.purger, settings.purge_interval, stop))
        try:
            yield
        finally:
            stop.set()
            await purging  # a purge in progress finishes; none starts
            # Batched audit events reach the database before the process goes.
            await run_in_threadpool(services.audit.close)
            await run_in_threadpool(services.token_rate.close)
            await run_in_threadpool(services.self_registered_token_rate.close)
            services.limits.close()

    app = AuthServer(title="authserver", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.state.templates = templates(TEMPLATES, settings)
    install_error_handlers(app)

    from authserver.account import routes as account
    from authserver.admin import routes as admin
    from authserver.interaction import routes as interaction
    from authserver.oauth import discovery, introspection, registration, revocation, token, tool_calls
    from authserver.oauth.metadata import discovery_paths
    from authserver.oauth.registry import ClientRegistry
    from authserver.web import home, signin

    registry = ClientRegistry(settings, policy=services.policy, limits=services.limits)
    # Endpoints live under the issuer's path (the metadata names them so); discovery URLs are
    # placed by RFC 8414 / OIDC rules in discovery.router.
    prefix = settings.issuer_path
    # The machine-facing hot paths skip FastAPI's stack (see fastlane); they are mounted first.
    hot = HotRoutes()
    for path in discovery_paths(settings):
        hot.add("GET", path, discovery.metadata_endpoint(services))
    hot.add("GET", f"{prefix}/jwks.json", discovery.jwks_endpoint(services))
    hot.add("GET", "/healthz", discovery.health_endpoint(services))
    hot.add("GET", "/readyz", readiness.endpoint(services.db))
    hot.add("POST", f"{prefix}/token", token.endpoint(services, registry))
    hot.add("POST", f"{prefix}/introspect", introspection.endpoint(services, registry))
    counting = observe.metrics_enabled(settings.metrics, settings.metrics_token, settings.is_https)
    observe.enable(counting)
    log_access = logging.getLogger("authserver.access").isEnabledFor(logging.INFO)  # serve --access-log
    hot.observe(count=counting, log_access=log_access)
    if counting:
        hot.add("GET", "/metrics", observe.metrics_endpoint(settings.metrics_token))
    cors_paths = [*discovery_paths(settings), *(f"{prefix}{p}" for p in ("/jwks.json", "/token", "/revoke"))]
    proxies = parse_networks(settings.trusted_proxies)
    hot_stack: ASGIApp = BodyLimit(PublicCORS(hot, paths=cors_paths, prefixes=[]), max_bytes=settings.max_body_bytes)
    if proxies:
        hot_stack = TrustedProxies(hot_stack, proxies)
    images = (settings.logo_origin,) if settings.logo_origin else ()
    app.use_hot_lane(hot, SecurityHeaders(HeaderLimit(hot_stack), hsts=settings.is_https, image_origins=images))
    app.include_router(revocation.router(registry), prefix=prefix)
    app.include_router(tool_calls.router(registry), prefix=prefix)
    # Always mounted: it answers per the registration policy of the moment (see its docstring).
    app.include_router(registration.router(services), prefix=prefix)
    app.include_router(interaction.router(services.cookies, registry), prefix=prefix)
    app.include_router(signin.router(services.cookies), prefix=prefix)
    app.include_router(account.router(services.cookies), prefix=prefix)
    app.include_router(admin.router(services.cookies, parse_networks(settings.admin_allowed_ips)), prefix=prefix)
    app.include_router(home.router(services.cookies, prefix))  # paths of its own: /favicon.ico is at the root
    app.mount(f"{prefix}/static", StaticFiles(directory=str(STATIC)), name="static")

    app.add_middleware(PublicCORS, paths=cors_paths, prefixes=[])
    app.add_middleware(RegistrationCORS, prefix=f"{prefix}/register", origins=settings.registration_cors_origins)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if proxies:
        app.add_middleware(TrustedProxies, networks=proxies)
    # Outside everything that reads headers (TrustedProxies included), inside the security headers.
    app.add_middleware(HeaderLimit)
    app.add_middleware(SecurityHeaders, hsts=settings.is_https, image_origins=images)
    app.add_middleware(observe.Observe, count=counting, log_access=log_access)  # outermost: the whole latency
    return app


def templates(directory: Path, settings: Settings) -> Jinja2Templates:
    """Jinja2 with autoescaping and gettext: the one template environment of every page.

    Every page names the operator (``display_name``, with ``logo_src`` when set) and links our
    favicon, so a person can tell whose server they are signing in to.
    """
    engine = Jinja2Templates(directory=str(directory))
    i18n.install(engine.env)
    engine.env.globals["prefix"] = settings.issuer_path  # pages link to our routes under the issuer's path
    engine.env.globals["display_name"] = settings.display_name
    engine.env.globals["logo_src"] = settings.logo_src()
    return engine


def create_app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory`` (used by ``authserver serve``)."""
    return create_app(load_settings())
