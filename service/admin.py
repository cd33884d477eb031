"""Operator endpoints (``/admin``, admin keys only): hot-swap a model's version.

``PUT /admin/models/{name}`` ``{"path": DIR}`` loads the bundle beside the serving version, warms it up,
switches the name over and answers once the old version has answered its last request and is released.
A bundle that fails to load, or fails its card check, leaves the old version serving (409, saying why);
one that would not fit in memory beside it is refused (507).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from service.answers import Swapped
from service.errors import Forbidden, InsufficientMemory, NotFound, SwapFailed, Unauthorized
from service.plumbing import require_admin_key, service_state
from service.schemas import ERROR_RESPONSES, ErrorResponse

admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin_key)],
                  responses={**ERROR_RESPONSES, **{e.status: {"model": ErrorResponse, "description": e.description}
                                                   for e in (Unauthorized, Forbidden, NotFound, SwapFailed,
                                                             InsufficientMemory)}})


class SwapRequest(BaseModel):
    """The new version of a bundle entry."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="bundle directory on the server's filesystem")


@admin.put("/models/{name}", summary="Hot-swap a model to a new bundle version")
async def swap_model(name: str, body: SwapRequest, request: Request) -> Swapped:
    """The new version, and the old one's, once the old is released; no request is dropped (each is answered by
    exactly one version)."""
    state = service_state(request)
    state.require_ready()
    return Swapped.model_validate(await state.registry.swap(name, Path(body.path)))
