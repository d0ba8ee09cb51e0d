"""Account routes (being built)."""

from __future__ import annotations

from fastapi import APIRouter

from authserver.interaction.cookies import Cookies


def router(cookies: Cookies) -> APIRouter:
    return APIRouter()
