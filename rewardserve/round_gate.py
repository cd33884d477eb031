"""The round's gate: the candidate against the base on every held-out set with ``rewardserve compare``'s paired
bootstrap, broken down by source and by annotator agreement."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewardserve.retrain import RetrainSettings


def agreement_labels(events: Sequence[Any]) -> dict[tuple[str, frozenset[str]], str]:
    """Each judged pair of completions (by prompt) → ``agreed`` (two or more people, one order), ``disputed``
    (both orders stated) or ``single`` (one person): the gate's breakdown by annotator agreement."""
    said: dict[tuple[str, frozenset[str]], Counter[str]] = {}
    for stored in events:
        e = stored.event
        prompt = json.dumps(e.prompt, sort_keys=True, ensure_ascii=False)
        for a, b in e.judgement.pairs():
            said.setdefault((prompt, frozenset((e.completions[a], e.completions[b]))), Counter())[
                e.completions[a]] += 1
    labels = {}
    for key, votes in said.items():
        labels[key] = "disputed" if len(votes) > 1 else "agreed" if sum(votes.values()) > 1 else "single"
    return labels


def gate(base: Path, candidate: Path, heldout: Sequence[Path], labels: dict[tuple[str, frozenset[str]], str],
         s: RetrainSettings) -> dict[str, Any]:
    """The candidate against the base on every held-out set (the last is this round's); passed when it is not
    worse beyond the interval on any of them."""
    from rewardmodel.compare import compare, pair_outcomes, pair_sources
    from rewardmodel.sources import load_examples
    from rewardserve.compare_cli import bundle_scores

    sets = []
    why = ""
    for i, path in enumerate(heldout, 1):
        name = "fresh" if i == len(heldout) else f"round {i}"
        examples = load_examples(str(path)) if path.stat().st_size else []
        if not sum(len(ex.pairs) for ex in examples):  # implicit signals or thumbs only: no pair to compare on
            sets.append({"set": name, "pairs": 0, "passed": True, "note": "no preference pairs held out"})
            continue
        ours, _ = bundle_scores(str(base), "torch", examples, 32)
        theirs, _ = bundle_scores(str(candidate), "torch", examples, 32)
        before, after = pair_outcomes(examples, ours), pair_outcomes(examples, theirs)
        result = compare(before, after, pair_sources(examples), None, s.resamples, s.confidence, s.seed)
        by_agreement = compare(before, after, _pair_agreement(examples, labels), None, 1, s.confidence,
                               s.seed).by_source
        sets.append({"set": name, **result.to_dict(), "by_agreement": by_agreement})
        if not result.passed and not why:
            lo, hi = result.interval
            why = (f"worse on the {name} held-out set: accuracy {result.candidate_accuracy:.4f} against "
                   f"{result.baseline_accuracy:.4f} (gain {result.gain:+.4f}, {result.confidence:.0%} interval "
                   f"[{lo:+.4f}, {hi:+.4f}], {result.pairs} pairs)")
    return {"passed": not why, "why": why, "sets": sets}


def _pair_agreement(examples: Sequence[Any], labels: dict[tuple[str, frozenset[str]], str]) -> list[str]:
    out = []
    for ex in examples:
        prompt = json.dumps(ex.prompt, sort_keys=True, ensure_ascii=False)
        for p in ex.pairs:
            out.append(labels.get((prompt, frozenset((ex.completions[p.better], ex.completions[p.worse]))),
                                  "single"))
    return out
