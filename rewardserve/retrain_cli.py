"""``rewardserve retrain``: one round of the loop (:mod:`rewardserve.retrain`). Exit 0 when it promoted (or exported,
without a server, or skipped for too few new judgements), 1 when the gate refused the candidate, 2 on an error."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from feedback.errors import FeedbackError
from rewardmodel import RewardModelError
from rewardmodel.variants import ONNX_VARIANTS

log = logging.getLogger(__name__)


def add_retrain(sub: argparse._SubParsersAction, emit: Any) -> None:
    """Register ``retrain``; ``emit(args, result)`` prints its JSON report."""
    p = sub.add_parser("retrain", help="one round of the loop: new feedback → a retrained, gated, exported and "
                                       "hot-swapped reward model (exit 0 promoted or skipped, 1 refused, 2 error)")
    p.add_argument("--db", default=os.environ.get("REWARDSERVE_FEEDBACK_DB"),
                   help="the feedback store: a SQLite path or sqlite:///…, postgresql://… "
                        "(default: $REWARDSERVE_FEEDBACK_DB)")
    p.add_argument("--from", dest="base", type=Path, help="the base bundle (default: the one the server serves "
                                                          "under --name)")
    p.add_argument("--server", help="the rewardserve URL whose model is retrained and swapped, e.g. "
                                    "http://rewardserve:8000")
    p.add_argument("--name", help="the served model's name (the --server's /v1/models id)")
    p.add_argument("--all-replicas", action="store_true",
                   help="swap every replica: each address --server's host name resolves to (a headless Service)")
    p.add_argument("--admin-key", default=os.environ.get("REWARDSERVE_ADMIN_KEY"),
                   help="the server's admin key (default: $REWARDSERVE_ADMIN_KEY)")
    p.add_argument("--api-key", default=os.environ.get("REWARDSERVE_API_KEY"),
                   help="the server's API key for /v1/models, when it has keys (default: $REWARDSERVE_API_KEY)")
    p.add_argument("--out", type=Path, default=Path("rounds"),
                   help="where rounds are kept (one directory each; the server must see the candidates' paths; "
                        "default: ./rounds)")
    p.add_argument("--min-new", type=int, default=1000, metavar="N",
                   help="skip the round (exit 0) with fewer new judgements than this (default: 1000: a fifth of "
                        "them held out, fewer pairs leave the gate's interval too wide to see a regression)")
    p.add_argument("--mode", choices=["warm", "scratch"], default="scratch",
                   help="scratch: train the backbone on all data with the base's recipe; warm: continue from the "
                        "base, one epoch on all data (default: scratch, which did better in the simulation)")
    p.add_argument("--heldout-share", type=float, default=0.2,
                   help="the newest share of the new judgements held out as this round's test set (default: 0.2)")
    p.add_argument("--min-annotator-agreement", type=float, default=0.5,
                   help="leave out an annotator whose agreement with the others is below this (0: keep all; "
                        "default: 0.5)")
    p.add_argument("--min-comparisons", type=int, default=10,
                   help="comparisons with other annotators before an annotator's agreement counts (default: 10)")
    p.add_argument("--implicit-weight", action="append", default=[], metavar="FORM=W",
                   help="an implicit form's pair weight (see `feedback export`); repeat per form")
    p.add_argument("--epochs", type=float, help="training epochs (default: 1 warm, the base's scratch)")
    p.add_argument("--variants", help=f"ONNX variants to export, comma-separated ({', '.join(ONNX_VARIANTS)}; "
                                      "default: the base's)")
    p.add_argument("--calibration-data", default="", help="preference data for the export's parity gate (default: "
                                                          "the demo set's held-out split, as `export`)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the gate (default: 2000)")
    p.add_argument("--confidence", type=float, default=0.95, help="the gate's interval confidence (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--watch", action="store_true",
                   help="instead of a round: compare the newest promotion's live accuracy with its parent's (exit 1 "
                        "when worse beyond the interval)")
    p.add_argument("--rollback", action="store_true", help="with --watch: swap the parent back in when worse")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=lambda args: _run(args, emit))


def _run(args: argparse.Namespace, emit: Any) -> int:
    from feedback.errors import InvalidFeedback
    from feedback.export import implicit_weights
    from rewardserve.retrain import RetrainSettings, run_round

    if not args.db:
        raise InvalidFeedback("say which feedback store: --db PATH_OR_URL (or set REWARDSERVE_FEEDBACK_DB)")
    if not 0 < args.heldout_share < 1:
        raise InvalidFeedback("--heldout-share must be between 0 and 1")
    settings = RetrainSettings(
        db=args.db, out=args.out, base=args.base, server=args.server, name=args.name, admin_key=args.admin_key,
        api_key=args.api_key, all_replicas=args.all_replicas, min_new=args.min_new, mode=args.mode,
        heldout_share=args.heldout_share,
        min_annotator_agreement=args.min_annotator_agreement, min_comparisons=args.min_comparisons,
        implicit_weights=implicit_weights(args.implicit_weight), epochs=args.epochs,
        variants=tuple(args.variants.split(",")) if args.variants else None,
        calibration_data=args.calibration_data, resamples=args.resamples,
        confidence=args.confidence, seed=args.seed, progress=not args.quiet)
    if args.rollback and not args.watch:
        raise InvalidFeedback("--rollback goes with --watch")
    if args.min_comparisons < 1:
        raise InvalidFeedback("--min-comparisons must be at least 1")
    if args.watch:
        from rewardserve.watch import watch

        verdict = _failing_with_2(lambda: watch(settings, args.rollback))
        emit(args, verdict.to_dict())
        return 1 if verdict.verdict in ("worse", "rolled_back") else 0
    report = _failing_with_2(lambda: run_round(settings))
    emit(args, report.to_dict())
    return 1 if report.result == "refused" else 0


T = TypeVar("T")


def _failing_with_2(work: Callable[[], T]) -> T:
    """``work()``; exit 1 means "refused" or "worse" to a scheduler, so any other failure ends with exit 2."""
    try:
        return work()
    except (RewardModelError, FeedbackError):
        raise
    except Exception as exc:
        log.exception("retrain failed")
        raise RewardModelError(f"retrain failed: {type(exc).__name__}: {exc}") from exc
