"""Console section: scopes and resources (MCP servers).

Scopes: list with usage → create / edit (the name is the identity: tokens and allow-lists carry
it, so it is never edited) → delete after a confirmation page that names every resource and
client whose allow-list loses it. Resources: list → create / edit → delete after confirmation,
and Check, which asks the server itself (``catalog.check``) and shows what it found. The result of a
Check is rendered by the POST itself: it is not stored, only its audit event is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.admin import common
from authserver.admin.forms import NOT_FOUND, Reply, checked, field_errors, unit_of_work
from authserver.catalog import removal
from authserver.catalog import repository as catalog
from authserver.catalog.models import Resource, Scope
from authserver.deps import ServicesDep
from authserver.errors import AppError
from authserver.interaction.cookies import Cookies
from authserver.oauth.params import Params
from authserver.services import Services
from authserver.web import pages
from authserver.web.pages import SignedIn


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    def page(request: Request, who: SignedIn, template: str, status_code: int = 200, **context: Any) -> Response:
        return pages.render(request, cookies, template, {"may_write": common.may_write(who), **context}, who=who,
                            status_code=status_code)

    def done(request: Request, path: str, message: str) -> Response:
        response = pages.see_other(pages.local(request, path))
        pages.flash(cookies, request, response, message)
        return response

    # --- Scopes ---------------------------------------------------------------------------

    @api.get("/scopes")
    def scopes(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return page(request, who, "admin/scopes.html", scopes=catalog.list_scopes(session),
                        usage=removal.scope_usage(session))

    @api.get("/scopes/new")
    def new_scope(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return page(request, who, "admin/scope_form.html", scope=None,
                        values={"name": "", "description": "", "write": False, "public": True}, errors={})

    @api.post("/scopes/new")
    async def create_scope(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        values = _scope_values(form)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            try:
                catalog.create_scope(session, values["name"], values["description"], write=values["write"],
                                     public=values["public"])
            except AppError as exc:
                raise Reply(page(request, who, "admin/scope_form.html", 400, scope=None, values=values,
                                 errors=field_errors(exc))) from None
            common.audit(session, who, request, "scope.created", scope=values["name"], write=values["write"],
                         public=values["public"])
            return done(request, "/admin/scopes", f"Scope {values['name']} created.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.get("/scopes/edit")
    def edit_scope(request: Request, services: ServicesDep, name: str = "") -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            scope = _scope_or_404(session, name)
            return page(request, who, "admin/scope_form.html", scope=scope, errors={},
                        values={"name": scope.name, "description": scope.description, "write": scope.write,
                                "public": scope.public})

    @api.post("/scopes/edit")
    async def update_scope(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        values = _scope_values(form)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            scope = catalog.require_scope(session, values["name"])
            try:
                catalog.update_scope(session, scope.name, values["description"], write=values["write"],
                                     public=values["public"])
            except AppError as exc:
                raise Reply(page(request, who, "admin/scope_form.html", 400, scope=scope, values=values,
                                 errors=field_errors(exc))) from None
            common.audit(session, who, request, "scope.updated", scope=scope.name, write=values["write"],
                         public=values["public"])
            return done(request, "/admin/scopes", f"Scope {scope.name} saved.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.get("/scopes/delete")
    def confirm_delete_scope(request: Request, services: ServicesDep, name: str = "") -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            scope = _scope_or_404(session, name)
            usage = removal.scope_usage(session)[scope.name]
            items = [f"resource {uri}" for uri in usage.resources] + [
                f"client {client_name} ({client_id})" for client_id, client_name in usage.clients]
            return page(request, who, "admin/confirm.html", section="scopes", heading=f"Delete scope {scope.name}?",
                        explanation=[
                            f"“{scope.description}” will no longer be grantable.",
                            "It is removed from the allow-list of every resource and client below. Tokens already "
                            "issued keep it until they expire; a refreshed token no longer carries it."
                            if items else "No resource or client allows it.",
                        ], items_heading="Allowed by", items=items,
                        action=pages.local(request, "/admin/scopes/delete"), hidden={"name": scope.name},
                        button="Delete scope", cancel=pages.local(request, "/admin/scopes"))

    @api.post("/scopes/delete")
    async def delete_scope(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        name = form.get("name", "")

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            usage = removal.delete_scope(session, name)
            common.audit(session, who, request, "scope.deleted", scope=name, resources=usage.resources,
                         clients=[client_id for client_id, _ in usage.clients])
            removed = len(usage.resources) + len(usage.clients)
            return done(request, "/admin/scopes", f"Scope {name} deleted"
                        + (f" and removed from {removed} allow-list(s)." if removed else "."))

        return await run_in_threadpool(unit_of_work, services.db, work)

    # --- Resources ------------------------------------------------------------------------

    @api.get("/resources")
    def resources(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return page(request, who, "admin/resources.html", resources=catalog.list_resources(session))

    @api.get("/resources/new")
    def new_resource(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return page(request, who, "admin/resource_form.html", resource=None, scopes=catalog.list_scopes(session),
                        values={"uri": "", "name": "", "scopes": []}, errors={})

    @api.post("/resources/new")
    async def create_resource(request: Request, services: ServicesDep) -> Response:
        form, pairs = await pages.read_form(request)
        values = _resource_values(form, pairs)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            try:
                resource = catalog.create_resource(session, values["uri"], values["name"], values["scopes"])
            except AppError as exc:
                raise Reply(page(request, who, "admin/resource_form.html", 400, resource=None, values=values,
                                 scopes=catalog.list_scopes(session), errors=field_errors(exc))) from None
            common.audit(session, who, request, "resource.created", resource=resource.uri, scopes=resource.scopes)
            return done(request, "/admin/resources", f"Resource {resource.uri} created.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.get("/resources/edit")
    def edit_resource(request: Request, services: ServicesDep, uri: str = "") -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            resource = _resource_or_404(session, uri)
            return page(request, who, "admin/resource_form.html", resource=resource,
                        scopes=catalog.list_scopes(session), errors={},
                        values={"uri": resource.uri, "name": resource.name, "scopes": resource.scopes})

    @api.post("/resources/edit")
    async def update_resource(request: Request, services: ServicesDep) -> Response:
        form, pairs = await pages.read_form(request)
        values = _resource_values(form, pairs)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            resource = catalog.require_resource(session, values["uri"])
            try:
                catalog.update_resource(session, resource.uri, values["name"], values["scopes"])
            except AppError as exc:
                raise Reply(page(request, who, "admin/resource_form.html", 400, resource=resource, values=values,
                                 scopes=catalog.list_scopes(session), errors=field_errors(exc))) from None
            common.audit(session, who, request, "resource.updated", resource=resource.uri, scopes=resource.scopes)
            return done(request, "/admin/resources", f"Resource {resource.uri} saved.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.get("/resources/delete")
    def confirm_delete_resource(request: Request, services: ServicesDep, uri: str = "") -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            resource = _resource_or_404(session, uri)
            users = removal.resource_usage(session, resource.uri)
            return page(request, who, "admin/confirm.html", section="resources",
                        heading=f"Delete resource {resource.name}?", explanation=[
                            f"{resource.uri} will no longer be a valid resource: authorization requests for it "
                            "are refused (invalid_target).",
                            "Refresh tokens issued for it stop working at their next refresh; access tokens "
                            "already issued stay valid until they expire (minutes).",
                            "It is also removed from the allow-list of the clients below." if users else
                            "No client's allow-list names it.",
                        ], items_heading="Clients that may use it",
                        items=[f"{client_name} ({client_id})" for client_id, client_name in users],
                        action=pages.local(request, "/admin/resources/delete"), hidden={"uri": resource.uri},
                        button="Delete resource", cancel=pages.local(request, "/admin/resources"))

    @api.post("/resources/delete")
    async def delete_resource(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        uri = form.get("uri", "")

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            users = removal.delete_resource(session, uri)
            common.audit(session, who, request, "resource.deleted", resource=uri,
                         clients=[client_id for client_id, _ in users])
            return done(request, "/admin/resources", f"Resource {uri} deleted.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.post("/resources/check")
    async def check_resource(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        return await run_in_threadpool(_check, request, services, cookies, form, page)

    return api


def _check(request: Request, services: Services, cookies: Cookies, form: Params, page: Any) -> Response:
    """Role and CSRF first, then the network with no transaction open, then the audit event."""
    with services.db.read_session() as session:
        common.writer(session, request, cookies, form)
        resource = _resource_or_404(session, form.get("uri", ""))
        known = {s.name for s in catalog.list_scopes(session)}
        uri, name, allowed = resource.uri, resource.name, list(resource.scopes)
    # Imported here: it brings the resource kit and httpx, which only this button needs.
    from authserver.catalog.check import ResourceChecker

    checker = ResourceChecker.for_settings(services.settings.cimd_allow_loopback_http)
    result = checker.check(uri, services.settings.issuer, known, allowed)
    with services.db.session() as session:
        who = common.writer(session, request, cookies, form)
        common.audit(session, who, request, "resource.checked", resource=uri, ok=result.ok,
                     problems=[f.message for f in result.findings if not f.ok])
        return page(request, who, "admin/resource_check.html", name=name, result=result)


def _scope_values(form: Params) -> dict[str, Any]:
    return {"name": form.get("name", "").strip(), "description": form.get("description", ""),
            "write": checked(form.get("write")), "public": checked(form.get("public"))}


def _resource_values(form: Params, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {"uri": form.get("uri", ""), "name": form.get("name", ""), "scopes": pages.values(pairs, "scope")}


def _scope_or_404(session: Session, name: str) -> Scope:
    scope = catalog.get_scopes(session, [name]).get(name)
    if scope is None:
        raise NOT_FOUND
    return scope


def _resource_or_404(session: Session, uri: str) -> Resource:
    resource = catalog.get_resource(session, uri)
    if resource is None:
        raise NOT_FOUND
    return resource
