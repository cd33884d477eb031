"""Preference records: every accepted data form parsed into one shape.

Accepted forms (docs/design.md §2)::

    {"prompt": str | [messages], "chosen": str, "rejected": str, "margin"?: float,
     "weight"?: float}                                                               explicit pair
    {"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": "…"}                      HH transcripts
    {"chosen": [messages], "rejected": [messages]}                                   conversational
    {"prompt": …, "completions": [str, …], "ranking": [best … worst]}                ranking
    {"prompt": …, "completions": [str, …], "ranking": [[0, 2], 1]}                   ranking with a tie group
    {"prompt": …, "completions": [str, …], "scores": [float, …]}                      scored (ties skipped)
    {"prompt": …, "completion": str, "label": true | false}                         thumbs (pointwise)
    {"prompt": …, "completion": str, "rating": x, "scale": [lo, hi]}                rating (pointwise)

Each becomes a :class:`PreferenceExample`: one prompt, its distinct completions, the ordered pairs
``(better, worse, margin)`` over them, so a k-way ranking encodes each completion once and yields all
C(k, 2) pairs (InstructGPT), and pointwise labels. :func:`merge_pointwise` then gathers the pointwise
rows of one prompt into one example, where ratings also yield pairs (as the scores form does); across
prompts they count only through the pointwise loss.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from rewardmodel.conversation import Prompt, split_conversation, split_transcript_pair, validate_messages
from rewardmodel.criteria import (
    CriterionLabel,
    CriterionPair,
    criteria_block,
    criterion_labels,
    finite,
    pairs_by_mean,
    rated_pairs,
    read_scale,
)
from rewardmodel.errors import DataError, FormatError


@dataclass(frozen=True)
class PreferencePair:
    """Completion ``better`` is preferred over ``worse`` (indices into the example's completions)."""

    better: int
    worse: int
    margin: float = 0.0
    votes: tuple[int, int] | None = None
    """(for, against): how many annotators chose this order and the other (a majority export's record)."""
    weight: float = 1.0
    """How much the pair counts in training against an explicit one (an implicit signal's is below 1)."""


@dataclass(frozen=True)
class PointLabel:
    """A human's absolute judgement of completion ``index``: ``target`` in [0, 1] is the thumb (1 up, 0 down)
    or the rating mapped onto its scale ((x - lo) / (hi - lo))."""

    index: int
    target: float
    kind: Literal["thumbs", "rating"]


@dataclass(frozen=True)
class PreferenceExample:
    """One prompt with its completions, the preferences among them and pointwise labels of them."""

    prompt: Prompt
    completions: tuple[str, ...]
    pairs: tuple[PreferencePair, ...]
    where: str = ""
    points: tuple[PointLabel, ...] = ()
    criteria: tuple[CriterionLabel, ...] = ()
    """Per-criterion ratings (:mod:`rewardmodel.criteria`)."""
    criterion_pairs: tuple[CriterionPair, ...] = ()
    source: str = ""
    """Where the judgement came from (a feedback export's ``source``, e.g. chat-ui or labeling), when given."""
    user: str = ""
    """Whose judgement it is (a feedback export's ``user``: the event's ``metadata.user``), when given; personal
    rewards are fitted per user (:mod:`rewardmodel.personal`)."""


def parse_record(row: Mapping[str, Any], where: str) -> PreferenceExample:
    """Parse one data row of any accepted form; raise :class:`DataError` naming ``where`` and the field."""
    if not isinstance(row, Mapping):
        raise DataError(where, f"expected a JSON object, got {type(row).__name__}")
    # Parquet and `datasets` give every row every column, null where a form lacks it.
    row = {k: v for k, v in row.items() if v is not None}
    source, user = row.get("source", ""), row.get("user", "")
    for name, value in (("source", source), ("user", user)):
        if not isinstance(value, str):
            raise DataError(where, f"field {name!r} must be a string, got {value!r}")
    try:
        if "completions" in row:
            return replace(_parse_ranking(row, where), source=source, user=user)
        if "completion" in row:
            return replace(_parse_point(row, where), source=source, user=user)
        if "chosen" in row and "rejected" in row:
            return replace(_parse_pair(row, where), source=source, user=user)
    except (FormatError, ValueError) as exc:
        raise DataError(where, str(exc)) from exc
    raise DataError(
        where,
        f"unrecognised record with fields {sorted(row)}; expected 'chosen'+'rejected' "
        "(optionally 'prompt'), 'prompt'+'completions'+('ranking' or 'scores'), or 'prompt'+'completion'+"
        "('label' or 'rating'+'scale')",
    )


def _prompt(row: Mapping[str, Any], where: str) -> Prompt:
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        return validate_messages(prompt, "prompt")
    raise DataError(where, "field 'prompt' must be a string or a list of chat messages")


def _margin(row: Mapping[str, Any], where: str) -> float:
    margin = row.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise DataError(where, f"field 'margin' must be a finite number, got {margin!r}")
    return float(margin)


def _parse_pair(row: Mapping[str, Any], where: str) -> PreferenceExample:
    chosen, rejected = row["chosen"], row["rejected"]
    margin = _margin(row, where)
    if isinstance(chosen, list) and isinstance(rejected, list):
        prompt_c, chosen_text = split_conversation(validate_messages(chosen, "chosen"))
        prompt_r, rejected_text = split_conversation(validate_messages(rejected, "rejected"))
        if prompt_c != prompt_r:
            raise DataError(where, "'chosen' and 'rejected' conversations differ before their last reply")
        prompt: Prompt = prompt_c
        if "prompt" in row:
            raise DataError(where, "give either 'prompt' or full conversations in 'chosen'/'rejected', not both")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        if "prompt" in row:
            prompt, chosen_text, rejected_text = _prompt(row, where), chosen, rejected
        else:
            prompt, chosen_text, rejected_text = split_transcript_pair(chosen, rejected)
    else:
        raise DataError(where, "'chosen' and 'rejected' must both be strings or both be message lists")
    if chosen_text == rejected_text:
        raise DataError(where, "'chosen' and 'rejected' completions are identical: the pair carries no preference")
    pair = PreferencePair(0, 1, margin, _votes(row, where), _weight(row, where))
    return PreferenceExample(prompt, (chosen_text, rejected_text), (pair,), where)


def _weight(row: Mapping[str, Any], where: str) -> float:
    """A pair's ``weight`` (default 1): a finite number above 0, at most 1 (a weak pair counts less, never more)."""
    weight = row.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1:
        raise DataError(where, f"field 'weight' must be a number in (0, 1], got {weight!r}")
    return float(weight)


def _votes(row: Mapping[str, Any], where: str) -> tuple[int, int] | None:
    votes = row.get("votes")
    if votes is None:
        return None
    if not isinstance(votes, Mapping) or not all(isinstance(votes.get(k), int) and not isinstance(votes.get(k), bool)
                                                 and votes[k] >= 0 for k in ("for", "against")):
        raise DataError(where, f"field 'votes' must be {{'for': n, 'against': m}} with counts >= 0, got {votes!r}")
    return votes["for"], votes["against"]


def _parse_ranking(row: Mapping[str, Any], where: str) -> PreferenceExample:
    completions = row["completions"]
    if (
        not isinstance(completions, list)
        or len(completions) < 2
        or not all(isinstance(c, str) for c in completions)
    ):
        raise DataError(where, "field 'completions' must be a list of at least two strings")
    if len(set(completions)) != len(completions):
        raise DataError(where, "field 'completions' has duplicates; a ranking needs distinct completions")
    k = len(completions)
    if "ranking" in row:
        try:
            groups = ranking_groups(row["ranking"], k)
        except ValueError as exc:
            raise DataError(where, str(exc)) from None
        pairs = tuple(PreferencePair(a, b) for a, b in ranking_pairs(groups))
        if not pairs:
            raise DataError(where, "the 'ranking' ties every completion: the record carries no preference")
    elif "scores" in row:
        scores = row["scores"]
        if not isinstance(scores, list) or len(scores) != k or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores
        ):
            raise DataError(where, f"field 'scores' must be {k} finite numbers, one per completion")
        pairs = tuple(
            PreferencePair(i, j) if scores[i] > scores[j] else PreferencePair(j, i)
            for i, j in itertools.combinations(range(k), 2)
            if scores[i] != scores[j]
        )
        if not pairs:
            raise DataError(where, "all 'scores' are equal: the record carries no preference")
    elif "criteria" in row or "criteria_rankings" in row:
        pairs = ()
    else:
        raise DataError(where, "a record with 'completions' needs 'ranking' (best first), 'scores', 'criteria' "
                               "or 'criteria_rankings'")
    labels = criterion_labels(row, k)
    return PreferenceExample(_prompt(row, where), tuple(completions), pairs, where, (), tuple(labels),
                             tuple(rated_pairs(labels) + _ranked_criteria(row, k)))


def _ranked_criteria(row: Mapping[str, Any], k: int) -> list[CriterionPair]:
    if "criteria_rankings" not in row:
        return []
    return [CriterionPair(name, a, b)
            for name, ranking in criteria_block(row["criteria_rankings"], "criteria_rankings").items()
            for a, b in ranking_pairs(ranking_groups(ranking, k))]



def ranking_groups(ranking: Any, k: int) -> list[list[int]]:
    """A ranking of ``k`` completions as its groups, best first: an index alone is a group of one, a nested
    list a group of tied completions. Raises ``ValueError`` unless it lists each index once.

    The one reading of a ranking: training's records and the feedback store's events both use it."""
    if not isinstance(ranking, list):
        raise ValueError("field 'ranking' must be a list of completion indices, best first")
    groups = [g if isinstance(g, list) else [g] for g in ranking]
    flat = [i for g in groups for i in g]
    if any(not g for g in groups) or not all(isinstance(i, int) and not isinstance(i, bool) for i in flat) \
            or sorted(flat) != list(range(k)):
        raise ValueError(f"field 'ranking' must list each completion index 0..{k - 1} once, best first "
                         "(a nested list is a group of tied completions)")
    return groups


def ranking_pairs(groups: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(better, worse) for every two completions in different groups: each group beats the ones below it."""
    return [(a, b) for hi, lo in itertools.combinations(groups, 2) for a in hi for b in lo]


def _parse_point(row: Mapping[str, Any], where: str) -> PreferenceExample:
    completion = row["completion"]
    if not isinstance(completion, str):
        raise DataError(where, "field 'completion' must be a string")
    if "label" in row:
        label = row["label"]
        if not isinstance(label, bool):
            raise DataError(where, f"field 'label' must be true (thumbs up) or false (down), got {label!r}")
        point = PointLabel(0, 1.0 if label else 0.0, "thumbs")
    elif "rating" in row:
        rating, scale = row["rating"], read_scale(row)
        if not finite(rating) or not scale[0] <= rating <= scale[1]:
            raise DataError(where, f"field 'rating' must be a number within the scale {list(scale)}, "
                                   f"got {rating!r}")
        point = PointLabel(0, (rating - scale[0]) / (scale[1] - scale[0]), "rating")
    elif "criteria" in row:
        point = None
    else:
        raise DataError(where, "a record with 'completion' needs 'label' (thumbs), 'rating' and 'scale', or "
                               "'criteria' and 'scale'")
    return PreferenceExample(_prompt(row, where), (completion,), (), where, (point,) if point else (),
                             tuple(criterion_labels(row, 1)))


def merge_pointwise(examples: Sequence[PreferenceExample]) -> list[PreferenceExample]:
    """Gather the pointwise-only examples of each prompt into one (first seen, in order): each distinct
    completion once, every label kept, and a pair for every two completions whose mean ratings differ.
    Other examples pass through unchanged."""
    out: list[PreferenceExample | list[PreferenceExample]] = []
    groups: dict[str, list[PreferenceExample]] = {}
    for ex in examples:
        if len(ex.completions) != 1:
            out.append(ex)
            continue
        key = ex.prompt if isinstance(ex.prompt, str) else repr(ex.prompt)
        if key not in groups:
            groups[key] = []
            out.append(groups[key])
        groups[key].append(ex)
    return [item if isinstance(item, PreferenceExample) else _merged(item) for item in out]


def _merged(group: list[PreferenceExample]) -> PreferenceExample:
    if len(group) == 1:
        return group[0]
    completions: dict[str, int] = {}
    points: list[PointLabel] = []
    criteria: list[CriterionLabel] = []
    for ex in group:
        index = completions.setdefault(ex.completions[0], len(completions))
        points.extend(PointLabel(index, p.target, p.kind) for p in ex.points)
        criteria.extend(CriterionLabel(index, c.name, c.target, c.scale) for c in ex.criteria)
    rated: dict[int, list[float]] = {}
    for p in points:
        if p.kind == "rating":
            rated.setdefault(p.index, []).append(p.target)
    pairs = tuple(PreferencePair(better, worse) for better, worse in pairs_by_mean(rated))
    where = group[0].where + (f" (+{len(group) - 1} rows of the same prompt)")
    return PreferenceExample(group[0].prompt, tuple(completions), pairs, where, tuple(points), tuple(criteria),
                             tuple(rated_pairs(criteria)), group[0].source)
