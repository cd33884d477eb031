"""``rewardserve personalize fit | refit``: personal rewards (:mod:`rewardmodel.personal`) from the command line.

``fit`` writes K basis heads into a bundle from judgements that carry a user (a preference file with ``user``
fields, or the feedback store, whose export carries each event's ``metadata.user``). ``refit`` fits users' weights on
those heads from the store, as the server does after their new judgements, and writes them to ``user_profiles``:
after ``fit`` (new heads need new profiles), or on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from rewardserve.feedback_cli import DB_HELP


def add_personalize(sub: argparse._SubParsersAction, emit: Any) -> None:
    """Register ``personalize`` and its subcommands; ``emit(args, result)`` prints a result."""
    p = sub.add_parser("personalize", help="personal rewards: basis heads on a bundle, and each user's weights")
    cmds = p.add_subparsers(dest="personalize_command", required=True)
    f = cmds.add_parser("fit", help="fit K basis heads on the bundle's frozen model from judgements with users; "
                                    "written into the bundle, figures into its card")
    f.add_argument("--model", required=True, type=Path, help="the bundle directory")
    f.add_argument("--data", required=True, help="judgements with a 'user' field: a preference file, or the feedback "
                                                 "store (sqlite:///PATH or postgresql://…)")
    f.add_argument("--k", type=int, default=8, help="basis heads, the model's own among them (default: 8)")
    f.add_argument("--held-out", type=float, default=0.2,
                   help="each user's newest share of pairs held out for the card's figures (default: 0.2)")
    f.add_argument("--min-judgements", type=int, default=5,
                   help="pairs a user needs before their own weights replace the population's (default: 5)")
    f.add_argument("--steps", type=int, default=400, help="optimizer steps (default: 400)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    r = cmds.add_parser("refit", help="fit users' weights on the bundle's heads from the feedback store")
    r.add_argument("--model", required=True, type=Path, help="the bundle directory (with basis heads)")
    r.add_argument("--db", default=os.environ.get("REWARDSERVE_FEEDBACK_DB"), help=DB_HELP)
    r.add_argument("--user", action="append", help="only this user (repeatable; default: every user with judgements)")
    p.set_defaults(func=lambda args: _run(args, emit))


def _run(args: argparse.Namespace, emit: Any) -> int:
    if args.personalize_command == "fit":
        from rewardmodel import DataError
        from training.personalize import personalize_bundle

        if args.k < 2:
            raise DataError("--k", "must be at least 2 (head 0 is the model's own)")
        emit(args, personalize_bundle(args.model, args.data, args.k, args.held_out, args.min_judgements, args.steps,
                                      args.seed, progress=not args.quiet))
        return 0
    emit(args, _refit(args))
    return 0


def _refit(args: argparse.Namespace) -> dict[str, Any]:
    from feedback.errors import InvalidFeedback
    from feedback.profiles import profiled_users, refit
    from feedback.store import FeedbackStore, redact
    from rewardmodel import read_card
    from rewardmodel.personal import bundle_basis
    from training.personalize import RowReader

    if not args.db:
        raise InvalidFeedback("say which database: --db PATH_OR_URL (or set REWARDSERVE_FEEDBACK_DB)")
    card = read_card(args.model)
    basis = bundle_basis(args.model, card.personalization)
    reader = RowReader(args.model, progress=False)
    store = FeedbackStore(args.db, pool_size=1, must_exist=True)

    async def rows_of(items: Any) -> Any:
        return reader.rows(items)

    async def run(fn: Any, *a: Any) -> Any:
        return fn(*a)

    async def every(users: list[str]) -> list[Any]:
        return [await refit(store, basis, u, rows_of, run) for u in users]

    try:
        users = args.user or profiled_users(store)
        profiles = asyncio.run(every(users))
    finally:
        store.close()
    personal = [p for p in profiles if p.judgements >= basis.min_judgements]
    return {"database": redact(store.url), "basis": basis.id, "users": len(profiles), "personal": len(personal),
            "population": len(profiles) - len(personal)}
