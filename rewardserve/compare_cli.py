"""``rewardserve compare``: the promotion gate between a serving reward model and a retrained one.

Both bundles score the same pairs (a preference file, or the feedback store's judgements, e.g. since the
last training). It prints each model's accuracy, the gain with its paired-bootstrap interval and a
breakdown by source, and exits 0 when the candidate passes (:mod:`rewardmodel.compare`), 1 when it does
not, so that a CI/CD step can run it before ``PUT /admin/models/{name}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from rewardmodel import PreferenceExample, RewardModelError
from rewardmodel.variants import ONNX_VARIANTS

FEEDBACK_SCHEMES = ("sqlite", "postgresql")


def add_compare(sub: argparse._SubParsersAction, emit: Any) -> None:
    """Register ``compare``; ``emit(args, result)`` prints its JSON result."""
    p = sub.add_parser("compare", help="score the same pairs with two bundles; exit 0 when the candidate passes "
                                       "the gate (not worse beyond the interval, or --min-gain), else 1")
    p.add_argument("--baseline", required=True, help="the serving bundle directory")
    p.add_argument("--candidate", required=True, help="the new bundle directory")
    p.add_argument("--data", required=True, help="preference data: a file, builtin:demo[:heldout], or the feedback "
                                                  "store (sqlite:///PATH or postgresql://…)")
    p.add_argument("--since", help="feedback store only: judgements at or after this RFC 3339 time")
    p.add_argument("--min-gain", type=float, default=None,
                   help="pass only when the interval's lower end is at least this accuracy gain (e.g. 0.01; a "
                        "negative value tolerates that much loss). Default: pass unless the candidate is worse "
                        "beyond the interval")
    p.add_argument("--variant", default="auto", choices=["auto", "torch", *ONNX_VARIANTS],
                   help="what each bundle runs: auto (its fp32 ONNX variant when exported, else the checkpoint)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval confidence (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--limit", type=int, default=0, help="only the first N examples (0: all)")
    p.add_argument("--batch-size", type=int, default=32, help="completions per forward pass")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a bundle's own Python code (torch)")
    p.set_defaults(func=lambda args: _run(args, emit))


def data_source(data: str, since: str | None) -> str:
    """``data`` with ``--since`` as the feedback store's query filter; refused for files."""
    if not since:
        return data
    if urlsplit(data).scheme.split("+")[0] not in FEEDBACK_SCHEMES:
        raise RewardModelError("--since filters the feedback store; --data is not a sqlite:// or postgresql:// URL")
    return data + ("&" if "?" in data else "?") + urlencode({"since": since})


def bundle_scores(model_dir: str, variant: str, examples: Sequence[PreferenceExample],
                  batch_size: int, trust_remote_code: bool = False) -> tuple[list[list[float]], str]:
    """Each completion's reward under the bundle, and what ran (``torch`` or an ONNX variant)."""
    from rewardmodel import Formatter, load_tokenizer, read_card
    from rewardmodel.scoring import score_examples

    card = read_card(model_dir)
    if variant == "auto":
        variant = "fp32" if "fp32" in card.onnx else "torch"
    formatter = Formatter(load_tokenizer(model_dir), card.formatting)
    if variant == "torch":
        from rewardmodel.torch_model import load_torch_model, torch_scorer

        model, _ = load_torch_model(model_dir, trust_remote_code=trust_remote_code)
        scorer = torch_scorer(model)
    else:
        from rewardmodel.onnx_model import onnx_scorer, open_session, variant_file

        scorer = onnx_scorer(open_session(variant_file(model_dir, card, variant)))
    scores, _, _ = score_examples(scorer, formatter, examples, batch_size, layout=card.layout)
    return scores, variant


def _run(args: argparse.Namespace, emit: Any) -> int:
    from rewardmodel.compare import compare, pair_outcomes, pair_sources
    from rewardmodel.sources import load_examples

    examples = load_examples(data_source(args.data, args.since), limit=args.limit)
    base, base_ran = bundle_scores(args.baseline, args.variant, examples, args.batch_size, args.trust_remote_code)
    cand, cand_ran = bundle_scores(args.candidate, args.variant, examples, args.batch_size, args.trust_remote_code)
    try:
        result = compare(pair_outcomes(examples, base), pair_outcomes(examples, cand), pair_sources(examples),
                         args.min_gain, args.resamples, args.confidence, args.seed)
    except ValueError as exc:  # no pairs: thumbs-only data cannot rank two models here
        raise RewardModelError(f"{args.data}: {exc}") from None
    emit(args, {"baseline": {"model": args.baseline, "ran": base_ran},
                "candidate": {"model": args.candidate, "ran": cand_ran}, "data": args.data, **result.to_dict()})
    return 0 if result.passed else 1
