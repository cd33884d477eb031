"""A small client for RL trainers and chat backends: sync (:class:`RewardClient`) and async
(:class:`AsyncRewardClient`), on httpx only.

* Large lists are split into requests of at most ``max_items_per_request`` items (the async client
  sends up to ``concurrency`` of them at once); scores come back in input order.
* 429, 502, 503 and 504 answers and connection failures are retried with exponential backoff and jitter;
  a ``Retry-After`` header is honoured. Scoring is idempotent, so a retry is always safe.
* One connection pool per client (keep-alive); use it as a context manager or call ``close()``.
* ``model="NAME"`` sends every request to that served model (a server may serve several);
  ``run_id="ppo-7"`` sends ``x-run-id``, so the server's reward-health monitors keep this RL run apart.

Example (PPO reward step)::

    with RewardClient("http://rewardserve:8000", api_key=key) as rm:
        rewards = rm.score_pairs(prompts, completions)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

Item = dict[str, Any] | tuple[Any, str]
"""``{"prompt", "completion"}``, ``{"messages"}``, or a ``(prompt, completion)`` tuple."""

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class RewardServeError(Exception):
    """The server refused a request (``status``: its HTTP status), or could not be reached after all retries
    (``status`` None, ``kind`` ``unreachable``)."""

    def __init__(self, status: int | None, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if status is None else f"{status} {kind}: {message}")
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts."""

    attempts: int = 6
    backoff_s: float = 0.25
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before attempt ``attempt + 1``: the server's Retry-After if given, else jittered backoff."""
        if retry_after and retry_after.strip().replace(".", "", 1).isdigit():
            return min(float(retry_after), self.max_backoff_s)
        return min(self.backoff_s * 2**attempt, self.max_backoff_s) * random.uniform(0.5, 1.0)


class _Protocol:
    """What the sync and async clients share: request bodies, chunking, the retry decision, parsing."""

    def __init__(self, max_items_per_request: int, retry: RetryPolicy, model: str | None) -> None:
        if max_items_per_request < 1:
            raise ValueError("max_items_per_request must be at least 1")
        self.max_items = max_items_per_request
        self.retry = retry
        self._model = {} if model is None else {"model": model}

    @staticmethod
    def _headers(api_key: str | None, run_id: str | None = None) -> dict[str, str]:
        return {**({"Authorization": f"Bearer {api_key}"} if api_key else {}),
                **({"x-run-id": run_id} if run_id else {})}

    def _score_bodies(self, items: Sequence[Item], normalize: bool | None) -> list[dict[str, Any]]:
        wire = [it if isinstance(it, dict) else {"prompt": it[0], "completion": it[1]} for it in items]
        extra = {**self._model, **({} if normalize is None else {"normalize": normalize})}
        return [{"items": wire[i:i + self.max_items], **extra} for i in range(0, len(wire), self.max_items)]

    @staticmethod
    def _pairs(prompts: Sequence[Any], completions: Sequence[str]) -> list[Item]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        return list(zip(prompts, completions, strict=True))

    def _next_delay(self, attempt: int, response: httpx.Response | None, error: Exception | None) -> float | None:
        """None: use this response; a number: retry after that many seconds; raises when out of attempts."""
        retryable = error is not None or (response is not None and response.status_code in RETRY_STATUSES)
        if not retryable:
            return None
        if attempt + 1 >= self.retry.attempts:
            if error is not None:
                raise RewardServeError(None, "unreachable", f"no answer after {self.retry.attempts} attempts "
                                       f"({type(error).__name__}: {error}); is the server running at that URL?") \
                    from error
            return None  # out of attempts: the caller raises the server's error
        return self.retry.delay(attempt, response.headers.get("retry-after") if response is not None else None)

    @staticmethod
    def _parse(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_success:
            return body  # type: ignore[no-any-return]
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise RewardServeError(response.status_code, error.get("type", "http_error"),
                               error.get("message", response.text[:200]))


class RewardClient(_Protocol):
    """Blocking client; thread-safe (httpx.Client is)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0,
                 max_items_per_request: int = 256, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None, model: str | None = None,
                 run_id: str | None = None) -> None:
        super().__init__(max_items_per_request, retry or RetryPolicy(), model)
        self._http = httpx.Client(base_url=base_url, headers=self._headers(api_key, run_id), timeout=timeout_s,
                                  transport=transport)

    def score(self, items: Sequence[Item], normalize: bool | None = None) -> list[float]:
        """One reward per item, in order."""
        return [s for body in self._score_bodies(items, normalize) for s in self._post("/score", body)["scores"]]

    def score_pairs(self, prompts: Sequence[Any], completions: Sequence[str],
                    normalize: bool | None = None) -> list[float]:
        """Rewards of ``completions[i]`` for ``prompts[i]`` (prompt: text or chat messages)."""
        return self.score(self._pairs(prompts, completions), normalize)

    def rerank(self, prompt: Any, completions: Sequence[str], top_k: int | None = None) -> dict[str, Any]:
        """``/rerank``'s answer: ``results`` best first and ``best_index``."""
        return self._post("/rerank", {"prompt": prompt, "completions": list(completions), "top_k": top_k,
                                      **self._model})

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                error = exc
            delay = self._next_delay(attempt, response, error)
            if delay is None:
                assert response is not None
                return self._parse(response)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRewardClient(_Protocol):
    """asyncio client; chunks of a large list are sent ``concurrency`` at a time."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0,
                 max_items_per_request: int = 256, concurrency: int = 4, retry: RetryPolicy | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, model: str | None = None,
                 run_id: str | None = None) -> None:
        super().__init__(max_items_per_request, retry or RetryPolicy(), model)
        self._http = httpx.AsyncClient(base_url=base_url, headers=self._headers(api_key, run_id), timeout=timeout_s,
                                       transport=transport)
        self._slots = asyncio.Semaphore(concurrency)

    async def score(self, items: Sequence[Item], normalize: bool | None = None) -> list[float]:
        """One reward per item, in order."""
        answers = await asyncio.gather(*(self._post("/score", b) for b in self._score_bodies(items, normalize)))
        return [s for answer in answers for s in answer["scores"]]

    async def score_pairs(self, prompts: Sequence[Any], completions: Sequence[str],
                          normalize: bool | None = None) -> list[float]:
        """Rewards of ``completions[i]`` for ``prompts[i]``."""
        return await self.score(self._pairs(prompts, completions), normalize)

    async def rerank(self, prompt: Any, completions: Sequence[str], top_k: int | None = None) -> dict[str, Any]:
        """``/rerank``'s answer."""
        return await self._post("/rerank", {"prompt": prompt, "completions": list(completions), "top_k": top_k,
                                      **self._model})

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            response, error = None, None
            try:
                async with self._slots:
                    response = await self._http.post(path, json=body)
            except httpx.TransportError as exc:
                error = exc
            delay = self._next_delay(attempt, response, error)
            if delay is None:
                assert response is not None
                return self._parse(response)
            await asyncio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
