"""Console section: users — list → create → a person's page (roles, password reset, disable/enable,
turning off a lost second factor).

Disabling (after a confirmation page) and a password reset end the person's sessions; the last
enabled admin cannot be disabled or lose the admin role, yourself included. Both rules live in
``users.repository`` so the CLI keeps them too. Turning off someone's two-step verification (their
phone and recovery codes lost) also ends their sessions: whoever signs in next shows the password
only, and sets it up again when AUTHSERVER_REQUIRE_SECOND_FACTOR asks them to.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.admin import common
from authserver.admin.forms import NOT_FOUND, Reply, field_errors, unit_of_work
from authserver.audit.log import last_at
from authserver.deps import ServicesDep
from authserver.errors import AppError, FieldError
from authserver.interaction import sessions
from authserver.interaction.cookies import Cookies
from authserver.mfa import totp
from authserver.users import repository as users
from authserver.users.models import ROLES, User
from authserver.web import pages
from authserver.web.pages import SignedIn

ROLE_HINTS = {"admin": "the console, every change", "auditor": "the console, read-only",
              "user": "their own account only"}


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    def page(request: Request, who: SignedIn, template: str, status_code: int = 200, **context: Any) -> Response:
        return pages.render(request, cookies, template, {"may_write": common.may_write(who), "roles": ROLES,
                                                         "role_hints": ROLE_HINTS, **context},
                            who=who, status_code=status_code)

    def done(request: Request, path: str, message: str) -> Response:
        response = pages.see_other(pages.local(request, path))
        pages.flash(cookies, request, response, message)
        return response

    def detail(request: Request, session: Session, who: SignedIn, user: User, status_code: int = 200,
               errors: dict[str, str] | None = None, roles: list[str] | None = None) -> Response:
        last = last_at(session, "login.succeeded", [str(user.id)]).get(str(user.id))
        enrolled = totp.enrolled(session, user.id)
        return page(request, who, "admin/user.html", status_code, user=user, last_sign_in=last,
                    chosen=roles if roles is not None else user.roles, errors=errors or {},
                    second_factor=enrolled,
                    recovery_codes_left=totp.recovery_codes_left(session, user.id) if enrolled else 0)

    @api.get("/users")
    def list_users(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            people = users.list_users(session)
            return page(request, who, "admin/users.html", users=people,
                        last=last_at(session, "login.succeeded", [str(u.id) for u in people]))

    @api.get("/users/new")
    def new_user(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return page(request, who, "admin/user_new.html", values={"username": "", "roles": ["user"]}, errors={})

    @api.post("/users/new")
    async def create_user(request: Request, services: ServicesDep) -> Response:
        form, pairs = await pages.read_form(request)
        values: dict[str, Any] = {"username": form.get("username", "").strip(), "roles": pages.values(pairs, "role")}

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            try:
                if not values["roles"]:
                    raise FieldError("roles", "choose at least one role")
                user = users.create_user(session, values["username"], form.get("password", ""), values["roles"])
            except AppError as exc:
                # The password is never sent back into the page.
                raise Reply(page(request, who, "admin/user_new.html", 400, values=values,
                                 errors=field_errors(exc))) from None
            common.audit(session, who, request, "user.created", username=user.username, roles=user.roles)
            return done(request, f"/admin/users/{user.id}", f"User {user.username} created.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.get("/users/{user_id}")
    def show_user(request: Request, services: ServicesDep, user_id: str) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return detail(request, session, who, _user(session, user_id))

    @api.post("/users/{user_id}/roles")
    async def set_roles(request: Request, services: ServicesDep, user_id: str) -> Response:
        form, pairs = await pages.read_form(request)
        roles = pages.values(pairs, "role")

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            user = _user(session, user_id)
            before = list(user.roles)
            try:
                users.set_roles(session, user, roles)
            except AppError as exc:
                raise Reply(detail(request, session, who, user, 400, field_errors(exc), roles)) from None
            common.audit(session, who, request, "user.roles_changed", username=user.username, before=before,
                         after=user.roles)
            return done(request, f"/admin/users/{user.id}", f"Roles of {user.username} saved.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.post("/users/{user_id}/password")
    async def reset_password(request: Request, services: ServicesDep, user_id: str) -> Response:
        form, _ = await pages.read_form(request)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            user = _user(session, user_id)
            try:
                users.reset_password(session, user, form.get("password", ""))
            except AppError as exc:
                raise Reply(detail(request, session, who, user, 400, field_errors(exc))) from None
            common.audit(session, who, request, "user.password_reset", username=user.username)
            return done(request, f"/admin/users/{user.id}",
                        f"New password set for {user.username}; they were signed out everywhere.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.get("/users/{user_id}/disable")
    def confirm_disable(request: Request, services: ServicesDep, user_id: str) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            user = _user(session, user_id)
            return page(request, who, "admin/confirm.html", section="users", heading=f"Disable {user.username}?",
                        explanation=[
                            f"{user.username} will not be able to sign in, and is signed out of every browser now.",
                            "Apps they connected stop working at once: their refresh is refused and introspection "
                            "reports their access tokens inactive (a resource server that only checks signatures "
                            "sees it when the token expires, within minutes). Enabling the account again restores "
                            "sign-in.",
                        ], items=[], action=pages.local(request, f"/admin/users/{user.id}/disable"), hidden={},
                        button="Disable account", cancel=pages.local(request, f"/admin/users/{user.id}"))

    @api.post("/users/{user_id}/disable")
    async def disable(request: Request, services: ServicesDep, user_id: str) -> Response:
        form, _ = await pages.read_form(request)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            user = _user(session, user_id)
            try:
                users.set_user_disabled(session, user, True)
            except AppError as exc:
                raise Reply(detail(request, session, who, user, 400, {"disable": str(exc)})) from None
            common.audit(session, who, request, "user.disabled", username=user.username)
            return done(request, f"/admin/users/{user.id}", f"{user.username} is disabled and signed out.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.post("/users/{user_id}/enable")
    async def enable(request: Request, services: ServicesDep, user_id: str) -> Response:
        form, _ = await pages.read_form(request)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            user = users.set_user_disabled(session, _user(session, user_id), False)
            common.audit(session, who, request, "user.enabled", username=user.username)
            return done(request, f"/admin/users/{user.id}", f"{user.username} can sign in again.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.post("/users/{user_id}/second-factor")
    async def reset_second_factor(request: Request, services: ServicesDep, user_id: str) -> Response:
        form, _ = await pages.read_form(request)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            user = _user(session, user_id)
            if not totp.disable(session, user.id):
                return done(request, f"/admin/users/{user.id}", f"{user.username} has no two-step verification.")
            ended = sessions.end_all(session, user.id)
            common.audit(session, who, request, "user.second_factor_reset", username=user.username,
                         sessions_ended=ended)
            return done(request, f"/admin/users/{user.id}",
                        f"Two-step verification of {user.username} is off; they were signed out everywhere.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    return api


def _user(session: Session, user_id: str) -> User:
    try:
        return users.require(session, uuid.UUID(user_id))
    except (ValueError, AppError):
        raise NOT_FOUND from None
