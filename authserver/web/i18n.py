"""Page languages: English (the message ids) and Korean, from standard gettext catalogs.

Catalogs are ``authserver/locale/<lang>/LC_MESSAGES/messages.po``, edited with Babel
(``make messages`` extracts ids from templates and code). They are compiled in memory when
the app starts, with Babel itself: no compiled ``.mo`` file can go stale beside its ``.po``,
and a fresh clone or the Docker image needs no build step.

The language of a request is the ``authserver_lang`` cookie (set by the switch on every
page), else the best match of ``Accept-Language``, else English. Templates get ``gettext``
through the Jinja2 i18n extension; the functions read the language from the template's
``request``, so nothing depends on thread- or task-local state.
"""

from __future__ import annotations

import gettext as gettext_module
import io
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import Environment, pass_context
from jinja2.runtime import Context
from starlette.requests import Request

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DEFAULT = "en"
LANGUAGES = {"en": "English", "ko": "한국어"}
COOKIE = "authserver_lang"


@cache
def translations(lang: str) -> gettext_module.NullTranslations:
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if lang == DEFAULT or not po.exists():
        return gettext_module.NullTranslations()
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext_module.GNUTranslations(buffer)


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    best, best_q = DEFAULT, 0.0
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        lang = tag.strip().lower().split("-")[0]
        # Earlier entries win ties (RFC 9110 §12.5.4 lets order break them).
        if lang in LANGUAGES and q > best_q and q > 0:
            best, best_q = lang, q - position * 1e-6
    return best


def language(request: Request) -> str:
    """The request's page language, decided once per request."""
    lang: str | None = getattr(request.state, "lang", None)
    if lang is None:
        lang = negotiate(request.cookies.get(COOKIE), request.headers.get("accept-language"))
        request.state.lang = lang
    return lang


def gettext_for(request: Request, message: str) -> str:
    return translations(language(request)).gettext(message)


def N_(message: str) -> str:
    """Marks a message id in code whose translation happens where it is shown."""
    return message


def install(env: Environment) -> None:
    env.add_extension("jinja2.ext.i18n")
    env.policies["ext.i18n.trimmed"] = True  # message ids do not depend on template indentation

    @pass_context
    def _gettext(context: Context, message: str) -> str:
        return translations(_context_language(context)).gettext(message)

    @pass_context
    def _ngettext(context: Context, singular: str, plural: str, n: int) -> str:
        return translations(_context_language(context)).ngettext(singular, plural, n)

    env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["LANGUAGES"] = LANGUAGES

    @pass_context
    def _current_language(context: Context) -> str:
        return _context_language(context)

    env.globals["current_language"] = _current_language


def _context_language(context: Context) -> str:
    request: Any = context.get("request")
    return language(request) if isinstance(request, Request) else DEFAULT
