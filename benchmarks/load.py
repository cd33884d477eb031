"""The load generator of the performance benchmark: its three client profiles against any of the
servers it compares, over keep-alive HTTP (aiohttp: a third of httpx's CPU per request, which matters
when the generator shares two cores with the server it measures).

A :class:`Api` turns (prompt, completion) pairs into that server's requests, so every server answers
the same pairs: rewardserve's ``/score`` and ``/rerank``, the naive server's ``/score``, and
infinity-emb's ``/rerank`` (one query per request: a multi-prompt batch becomes one rerank per prompt,
sent concurrently, which is what a trainer using it would have to do).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
from processes import cpu_seconds

Pair = tuple[str, str]


@dataclass(frozen=True)
class Api:
    """How one server is asked to score pairs."""

    name: str  # "rewardserve" | "naive" | "infinity"

    async def score(self, session: aiohttp.ClientSession, pairs: Sequence[Pair]) -> int:
        """Score a batch of pairs with any prompts; returns the number of scores received."""
        if self.name == "infinity":
            by_prompt: dict[str, list[str]] = {}
            for prompt, completion in pairs:
                by_prompt.setdefault(prompt, []).append(completion)
            done = await asyncio.gather(*(self.rerank(session, p, c) for p, c in by_prompt.items()))
            return sum(done)
        body = {"items": [{"prompt": p, "completion": c} for p, c in pairs]}
        return len((await _post(session, "/score", body))["scores"])

    async def rerank(self, session: aiohttp.ClientSession, prompt: str, candidates: Sequence[str]) -> int:
        """Score one prompt's candidates; returns the number of scores received."""
        if self.name == "infinity":
            body: dict[str, Any] = {"query": prompt, "documents": list(candidates), "model": "."}
            return len((await _post(session, "/rerank", body))["results"])
        if self.name == "naive":  # no rerank endpoint: the same pairs through /score
            return await self.score(session, [(prompt, c) for c in candidates])
        return len((await _post(session, "/rerank", {"prompt": prompt, "completions": list(candidates)}))["results"])


async def _post(session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
    async with session.post(path, json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"{path} answered {r.status}: {(await r.text())[:300]}")
        return await r.json()


@dataclass
class Outcome:
    """What one profile run measured."""

    pairs: int
    wall_s: float
    latencies_s: list[float]
    server_cpu_s: float
    client_cpu_s: float
    offered_per_s: float = 0.0  # open loop only: the arrival rate asked for

    def summary(self) -> dict[str, float]:
        """pairs/s, latency percentiles in ms, CPU use."""
        ms = np.array(self.latencies_s) * 1000
        return {"pairs_per_s": self.pairs / self.wall_s, "requests": len(ms), "wall_s": self.wall_s,
                "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
                "latency_ms_p99": float(np.percentile(ms, 99)), "server_cpu_s": self.server_cpu_s,
                "server_cores_busy": self.server_cpu_s / self.wall_s, "client_cpu_s": self.client_cpu_s,
                "offered_requests_per_s": self.offered_per_s,
                "achieved_requests_per_s": len(ms) / self.wall_s}


async def _measure(url: str, server_pid: int, connections: int,
                   body: Callable[[aiohttp.ClientSession, list[float]], Awaitable[int]]) -> Outcome:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        latencies: list[float] = []
        started, cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
        pairs = await body(session, latencies)
        wall = time.perf_counter() - started
        return Outcome(pairs, wall, latencies, cpu_seconds(server_pid) - server_cpu, time.process_time() - cpu)


async def _timed(latencies: list[float], work: Awaitable[int]) -> int:
    t = time.perf_counter()
    n = await work
    latencies.append(time.perf_counter() - t)
    return n


def closed_loop(url: str, server_pid: int, api: Api, pairs: Sequence[Pair], per_request: int,
                clients: int) -> Outcome:
    """``clients`` workers each post ``per_request`` pairs back to back until all ``pairs`` are scored."""
    chunks = [list(pairs[i:i + per_request]) for i in range(0, len(pairs), per_request)]
    chunks.reverse()

    async def run(session: aiohttp.ClientSession, latencies: list[float]) -> int:
        async def worker() -> int:
            n = 0
            while chunks:
                n += await _timed(latencies, api.score(session, chunks.pop()))
            return n

        return sum(await asyncio.gather(*(worker() for _ in range(clients))))

    return asyncio.run(_measure(url, server_pid, clients * 8, run))


def rerank_groups(pairs: Sequence[Pair], candidates: int) -> list[tuple[str, list[str]]]:
    """(prompt, ``candidates`` completions) groups: each prompt's completions, topped up from the pool."""
    pool = [c for _, c in pairs]
    rng = random.Random(0)
    groups, seen = [], set()
    for prompt, _ in pairs:
        if prompt in seen:
            continue
        seen.add(prompt)
        own = [c for p, c in pairs if p == prompt][:candidates]
        groups.append((prompt, own + rng.sample(pool, candidates - len(own))))
    return groups


def rerank_closed(url: str, server_pid: int, api: Api, groups: Sequence[tuple[str, list[str]]],
                  clients: int) -> Outcome:
    """The maximum rerank rate: ``clients`` workers posting reranks back to back."""
    todo = list(reversed(groups))

    async def run(session: aiohttp.ClientSession, latencies: list[float]) -> int:
        async def worker() -> int:
            n = 0
            while todo:
                prompt, candidates = todo.pop()
                n += await _timed(latencies, api.rerank(session, prompt, candidates))
            return n

        return sum(await asyncio.gather(*(worker() for _ in range(clients))))

    return asyncio.run(_measure(url, server_pid, clients * 8, run))


def rerank_open(url: str, server_pid: int, api: Api, groups: Sequence[tuple[str, list[str]]],
                rate: float, seconds: float) -> Outcome:
    """Open loop: reranks arrive as a Poisson process at ``rate`` per second for ``seconds``, whatever
    the server's pace (a chat backend does not wait for earlier users)."""
    return open_loop(url, server_pid, lambda session, k: api.rerank(session, *groups[k % len(groups)]), rate, seconds)


def score_open(url: str, server_pid: int, api: Api, chunks: Sequence[Sequence[Pair]], rate: float,
               seconds: float) -> Outcome:
    """Open loop of ``/score`` requests (``chunks``, in turn) arriving at ``rate`` per second: an RL trainer's
    rollouts at a fraction of the server's maximum."""
    return open_loop(url, server_pid, lambda session, k: api.score(session, chunks[k % len(chunks)]), rate, seconds)


def open_loop(url: str, server_pid: int, send: Callable[[aiohttp.ClientSession, int], Awaitable[int]], rate: float,
              seconds: float) -> Outcome:
    """Requests ``send(session, k)`` arriving as a Poisson process at ``rate`` per second for ``seconds``."""
    rng = random.Random(1)

    async def run(session: aiohttp.ClientSession, latencies: list[float]) -> int:
        tasks, k = [], 0
        start = time.perf_counter()
        next_at = 0.0
        while next_at < seconds:
            delay = start + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_timed(latencies, send(session, k))))
            k += 1
            next_at += rng.expovariate(rate)
        return sum(await asyncio.gather(*tasks))

    outcome = asyncio.run(_measure(url, server_pid, 512, run))
    outcome.offered_per_s = rate
    return outcome
