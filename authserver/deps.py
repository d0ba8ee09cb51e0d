"""FastAPI dependencies: the app's services (each route opens its own unit of work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from authserver.services import Services


async def get_services(request: Request) -> Services:
    # async: a sync dependency would cost every request a threadpool hop.
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
