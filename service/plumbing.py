"""What every scoring endpoint shares, native or adapter: the state lookup, the API-key check, and
disconnect-aware scoring with admission, timing headers and the drain's accounting.

``routes`` (native endpoints) and ``compat`` (adapters) are siblings on top of this module.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import Depends, Request, Response

from service.engine import ScoreCall, Scored
from service.errors import ClientClosed, Forbidden, InvalidRequest, Unauthorized
from service.hooks import Answered
from service.state import ServiceState

MAX_RUN_ID = 64
"""``x-run-id`` becomes a metric label: cut to this many characters."""


def service_state(request: Request) -> ServiceState:
    """The app's :class:`ServiceState`."""
    return request.app.state.service  # type: ignore[no-any-return]


async def require_api_key(request: Request) -> None:
    """With API keys configured, a request needs ``Authorization: Bearer <key>`` matching one of them.

    ``async`` although it never awaits: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hop per request that cost ~10% of the event loop's time under many one-pair requests."""
    _check_bearer(request, service_state(request).settings.api_keys)


async def require_feedback_key(request: Request) -> None:
    """``/feedback`` takes the feedback keys when they are set (and then only them), else the API keys."""
    settings = service_state(request).settings
    _check_bearer(request, settings.feedback_keys or settings.api_keys)


async def require_admin_key(request: Request) -> None:
    """``/admin`` takes the admin keys only; with none configured it is off (403)."""
    keys = service_state(request).settings.admin_keys
    if not keys:
        raise Forbidden("the admin endpoints are off: set REWARDSERVE_ADMIN_KEYS to use them")
    _check_bearer(request, keys)


async def require_annotator(request: Request) -> str:
    """The annotator whose own key the request carries (``Authorization: Bearer <key>``); 403 while labeling
    is off, 401 for a wrong key. Keys are compared in constant time, every one of them."""
    names: dict[str, str] = {}  # key → annotator
    for pair in service_state(request).settings.annotator_keys:
        name, _, key = pair.partition(":")
        names[key] = name
    if not names:
        raise Forbidden("labeling is off: set REWARDSERVE_ANNOTATOR_KEYS=name:key,… to let annotators in")
    matched = _bearer_key(request, tuple(names))
    if matched is None:
        raise Unauthorized("an annotator key is required: log in on /label with yours")
    return names[matched]


async def admit_write(request: Request) -> AsyncIterator[None]:
    """Count a feedback request until it is answered (the drain waits for it); refuse it while draining."""
    with service_state(request).admit_write():
        yield


def _check_bearer(request: Request, keys: tuple[str, ...]) -> None:
    if keys and _bearer_key(request, keys) is None:
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'")


def _bearer_key(request: Request, keys: tuple[str, ...]) -> str | None:
    """The one of ``keys`` the request's ``Authorization: Bearer`` carries, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare against every key without stopping early: the time taken says nothing about the keys
    matched = None
    for key in keys:
        if hmac.compare_digest(token.strip().encode(), key.encode()):
            matched = key
    return matched if scheme.lower() == "bearer" else None


def guard(setting: str) -> Any:
    """A dependency asking for an API key on an operational endpoint when ``setting`` says so."""

    async def check(request: Request) -> None:
        if getattr(service_state(request).settings, setting):
            await require_api_key(request)

    return Depends(check)


USER_HEADER = "x-rewardserve-user"
"""A request's user for personal rewards, when its body has no ``user`` (the adapters' bodies have none)."""
MAX_USER = 256


async def score_for(request: Request, response: Response, call: ScoreCall, model: str | None = None,
                    rerank: bool = False) -> Scored:
    """Score ``call`` for this request on the model it names and set the timing and ``x-model-version`` headers.

    The request is admitted first (503 while loading, draining or unhealthy; 404 for an unknown model) and
    counted until it is answered, so a drain or a swap finishes it; if the client disconnects first, its
    queued items are dropped. A user (the call's, or the ``x-rewardserve-user`` header's) gets their personal
    reward, their profile looked up first. The answer then goes to the app's hooks (:mod:`service.hooks`:
    monitors, labeling sampler, shadow; ``rerank``: the request picks a best candidate).
    """
    state = service_state(request)
    user = call.user if call.user is not None else request.headers.get(USER_HEADER)
    if user is not None and not 0 < len(user) <= MAX_USER:
        raise InvalidRequest(f"'user' must be 1 to {MAX_USER} characters", kind="invalid_input")
    with state.admit(model, request.headers) as resolved:
        wanted = state.settings.normalize if call.normalize is None else call.normalize
        call = replace(call, normalize=wanted, user=user)
        if user is not None:
            call = replace(call, personal=await state.profile(resolved.target, user))
        work = asyncio.ensure_future(resolved.target.score(call))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                if not task.done():
                    task.cancel()  # cancelling the work cancels its job in the scheduler
        if not work.done():
            raise ClientClosed("the client disconnected before its scores were ready")
        scored = work.result()
    state.after(Answered(resolved, call, scored, request.headers.get("x-run-id", "")[:MAX_RUN_ID], rerank))
    response.headers.update(scored.timings.headers())
    response.headers["x-model-version"] = scored.version
    return scored


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
