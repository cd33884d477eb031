"""Personal-reward profiles in the store: each user's weights on a bundle's basis heads (:mod:`rewardmodel.personal`).

A profile is fitted from the user's judgements (events whose ``metadata.user`` names them) and kept in
``user_profiles``, one row per (user, basis heads). The server refits a user's profile after their new judgements
commit, off the request path (:class:`Refitter`); ``rewardserve personalize refit`` does it on demand. Erasure
(``feedback prune --user``) deletes the profiles in the events' transaction (:meth:`FeedbackStore.prune`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
from prometheus_client import Counter
from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from feedback.events import FeedbackEvent, utc_now
from feedback.judgements import preferred_pairs
from feedback.schema import ProfileRow
from feedback.store import FeedbackStore, Filters, naive_utc
from rewardmodel.personal import BasisHeads, Item, ItemTable, Profile, RowsOf, fit_profile

log = logging.getLogger(__name__)

PROFILES = cast(Table, ProfileRow.__table__)


@dataclass(frozen=True)
class UserPairs:
    """A user's judged items and the pairs among them (indices into ``items``)."""

    items: list[Item]
    better: list[int]
    worse: list[int]


def user_pairs(store: FeedbackStore, user: str) -> UserPairs:
    """Every strict preference ``user``'s stored judgements state (choices, rankings, ratings), oldest first."""
    table = ItemTable()
    better: list[int] = []
    worse: list[int] = []
    for stored in store.events(Filters(user=user)):
        e = stored.event
        for b, w in preferred_pairs(e):
            better.append(table.at(e.prompt, e.completions[b]))
            worse.append(table.at(e.prompt, e.completions[w]))
    return UserPairs(table.items, better, worse)


def save_profile(store: FeedbackStore, profile: Profile, now: datetime) -> None:
    """Write (or replace) the profile."""
    store.ready()
    insert = pg_insert if store.dialect == "postgresql" else sqlite_insert
    values = {"user_id": profile.user, "basis": profile.basis, "weights": list(profile.weights),
              "judgements": profile.judgements, "fitted_at": naive_utc(now)}
    stmt = insert(PROFILES).values(values)
    stmt = stmt.on_conflict_do_update(index_elements=["user_id", "basis"],
                                      set_={k: stmt.excluded[k] for k in ("weights", "judgements", "fitted_at")})
    with store.translating("saving a profile"), store.engine.begin() as conn:
        conn.execute(stmt)


def load_profile(store: FeedbackStore, user: str, basis: str) -> Profile | None:
    """The user's profile on the heads ``basis`` names, or None."""
    store.ready()
    query = select(ProfileRow.weights, ProfileRow.judgements).where(ProfileRow.user_id == user,
                                                                    ProfileRow.basis == basis)
    with store.translating("reading a profile"), store.engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else Profile(user, basis, tuple(float(w) for w in row[0]), int(row[1]))


def profiled_users(store: FeedbackStore) -> list[str]:
    """Every user with a judgement in the store."""
    return sorted(u for u in store.counts("user_id") if u != "none")


async def refit(store: FeedbackStore, basis: BasisHeads, user: str, rows_of: RowsOf,
                run: Callable[..., Awaitable[Any]]) -> Profile:
    """Fit and save ``user``'s profile on ``basis`` from all their judgements; ``run(fn, *args)`` runs the store's
    blocking calls off the event loop, ``rows_of`` reads the rows."""
    pairs: UserPairs = await run(user_pairs, store, user)
    rows = await rows_of(pairs.items) if pairs.items else np.zeros((0, basis.width))
    # a few milliseconds of numpy: off the event loop too
    profile = await run(fit_profile, basis, user, rows[pairs.better], rows[pairs.worse])
    await run(save_profile, store, profile, utc_now())
    return profile


Targets = Callable[[], Sequence[tuple[BasisHeads, RowsOf]]]
"""The served models with basis heads, as (heads, their rows), at the moment of asking."""


class Refitter:
    """Refits the profiles of users whose judgements just committed, in the background: one fit per (user, heads)
    at a time, and judgements arriving during a fit make it run once more. A failed fit is logged and the old
    profile keeps serving; the next judgement tries again."""

    def __init__(self, store: FeedbackStore, targets: Targets, run: Callable[..., Awaitable[Any]],
                 fits: Counter) -> None:
        self._store = store
        self._targets = targets
        self._run = run
        self._fits = fits
        """``rewardserve_profile_fits`` by result."""
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()

    def stored(self, events: Sequence[FeedbackEvent]) -> None:
        """New events committed: refit their users' profiles (called on the event loop)."""
        users = sorted({e.user for e in events if e.user})
        if not users:
            return
        for basis, rows_of in self._targets():
            for user in users:
                key = (user, basis.id)
                if key in self._running:
                    self._again.add(key)
                    continue
                self._running[key] = asyncio.get_running_loop().create_task(self._fit(key, basis, rows_of))

    async def _fit(self, key: tuple[str, str], basis: BasisHeads, rows_of: RowsOf) -> None:
        try:
            while True:
                self._again.discard(key)
                try:
                    profile = await refit(self._store, basis, key[0], rows_of, self._run)
                    self._fits.labels("ok").inc()
                    log.debug("refitted a profile on %s from %d judgements", basis.id, profile.judgements)
                except Exception as exc:  # the request that triggered it was answered long ago: log, keep the old
                    self._fits.labels("failed").inc()
                    log.warning("refitting a profile on basis %s failed: %s: %s", basis.id, type(exc).__name__, exc)
                if key not in self._again:
                    return
        finally:
            self._running.pop(key, None)

    async def idle(self) -> None:
        """Wait until no fit is running (shutdown, tests)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
