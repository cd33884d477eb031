"""The judgement of a feedback event, one class per form: each owns its validation, the pairs it states and its
training records, so export, agreement, live accuracy and personal profiles share one reading of an event, and a
new form is one class (registered in :data:`JUDGEMENTS` under the event field that carries it).

On the wire and in the store an event keeps its flat shape (``choice``, ``ranking`` or ``ratings`` beside the
prompt and completions): :meth:`FeedbackEvent.judgement <feedback.events.FeedbackEvent.judgement>` builds the
class from it, so stored events load as they always did.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from rewardmodel.records import ranking_groups, ranking_pairs

if TYPE_CHECKING:
    from feedback.events import FeedbackEvent

Pair = tuple[int, int]
"""(better, worse): indices into the event's completions."""
Rating = float | None
Form = Literal["choice", "ranking", "ratings", "thumbs", "regenerate", "copy", "edit", "continue", "abandon"]
FORMS: tuple[Form, ...] = ("choice", "ranking", "ratings", "thumbs", "regenerate", "copy", "edit", "continue",
                           "abandon")
Record = dict[str, Any]


class Judgement(ABC):
    """What one human said about an event's k completions."""

    field: ClassVar[str]
    """The event field that carries this form (on the wire and in the store)."""
    attribute: ClassVar[str | None] = None
    """The event model's attribute for the field, where the field's name is taken (``copy``, ``continue``)."""

    @classmethod
    def of(cls, value: Any, event: FeedbackEvent) -> Judgement:
        """The judgement an event carrying ``value`` in this form's field states."""
        return cls(value, len(event.completions))  # type: ignore[call-arg]

    @property
    @abstractmethod
    def form(self) -> Form:
        """The form's name (a metric label and a stored column)."""

    @abstractmethod
    def check(self, k: int) -> None:
        """Raise ``ValueError`` saying what is wrong, for an event of ``k`` completions."""

    @abstractmethod
    def pairs(self) -> list[Pair]:
        """Every strict preference it states."""

    @abstractmethod
    def records(self, event: FeedbackEvent) -> tuple[list[Record], str | None]:
        """(training records of the event, why it gave none when it gave none)."""


@dataclass(frozen=True)
class Choice(Judgement):
    """``choice: i``: completion i is preferred over each of the others."""

    field: ClassVar[str] = "choice"
    index: int
    k: int

    @property
    def form(self) -> Form:
        return "choice"

    def check(self, k: int) -> None:
        if k < 2:
            raise ValueError("field 'choice' needs at least two completions")
        if not 0 <= self.index < k:
            raise ValueError(f"field 'choice' must be an index 0..{k - 1}, got {self.index}")

    def pairs(self) -> list[Pair]:
        return [(self.index, j) for j in range(self.k) if j != self.index]

    def records(self, event: FeedbackEvent) -> tuple[list[Record], str | None]:
        """One ``{"prompt", "chosen", "rejected"}`` per other completion."""
        chosen = event.completions[self.index]
        return [{"id": f"{event.id}#{j}", "prompt": event.prompt, "chosen": chosen, "rejected": c}
                | provenance(event) for j, c in enumerate(event.completions) if j != self.index], None


@dataclass(frozen=True)
class Ranking(Judgement):
    """``ranking: [best … worst]``; a nested list is a tie group (``[[0, 2], 1]``)."""

    field: ClassVar[str] = "ranking"
    order: Sequence[int | list[int]]
    k: int

    @property
    def form(self) -> Form:
        return "ranking"

    def check(self, k: int) -> None:
        if k < 2:
            raise ValueError("field 'ranking' needs at least two completions")
        ranking_groups(list(self.order), k)  # the contract's reading of a ranking, the one training uses

    def pairs(self) -> list[Pair]:
        return ranking_pairs(ranking_groups(list(self.order), self.k))

    def records(self, event: FeedbackEvent) -> tuple[list[Record], str | None]:
        """The ranking form as it is, tie groups included."""
        if len(self.order) < 2:
            return [], "no preference (every completion tied)"
        return [{"id": event.id, "prompt": event.prompt, "completions": event.completions,
                 "ranking": list(self.order)} | provenance(event)], None


@dataclass(frozen=True)
class Ratings(Judgement):
    """``ratings: [r, …]``, one per completion (null: not rated); thumbs (+1/−1) without ``scale``."""

    field: ClassVar[str] = "ratings"
    values: Sequence[Rating]
    scale: tuple[float, float] | None = None

    @classmethod
    def of(cls, value: Any, event: FeedbackEvent) -> Judgement:
        return cls(value, event.scale)

    @property
    def form(self) -> Form:
        return "ratings" if self.scale is not None else "thumbs"

    def check(self, k: int) -> None:
        check_ratings("ratings", self.values, k, self.scale)
        if all(r is None for r in self.values):
            raise ValueError("field 'ratings': at least one completion must be rated")

    def pairs(self) -> list[Pair]:
        return rating_pairs(self.values)

    def records(self, event: FeedbackEvent) -> tuple[list[Record], str | None]:
        """One pointwise record per rated completion: a thumb's ``label``, or a ``rating`` on its ``scale`` with
        the completion's per-criterion ratings."""
        out: list[Record] = []
        for j, (completion, rating) in enumerate(zip(event.completions, self.values, strict=True)):
            if rating is None:
                continue
            record: Record = {"id": f"{event.id}#{j}", "prompt": event.prompt, "completion": completion} | \
                provenance(event)
            if self.scale is None:
                record["label"] = rating > 0
            else:
                record |= {"rating": rating, "scale": list(self.scale)}
                criteria = {n: v[j] for n, v in (event.criteria or {}).items() if v[j] is not None}
                if criteria:  # named criteria train a criteria model's outputs (rewardmodel.criteria)
                    record["criteria"] = criteria
            out.append(record)
        return out, None if out else "nothing rated"


@dataclass(frozen=True)
class Implicit(Judgement):
    """What a chat UI sees without asking: a weak preference, one pair per other completion, weighted in training
    by :attr:`weight` (``rewardserve feedback export --implicit-weight FORM=W`` changes it). An event of one
    completion states no preference: it is kept, and gives no record."""

    weight: ClassVar[float]
    """The default weight of each pair, against 1 for an explicit choice's."""
    positive: ClassVar[bool]
    """True: the signalled completion beats the others; False: the others beat it."""
    index: int
    k: int

    @property
    def form(self) -> Form:
        return self.field  # type: ignore[return-value]

    def check(self, k: int) -> None:
        if not 0 <= self.index < k:
            raise ValueError(f"field '{self.field}' must be an index 0..{k - 1}, got {self.index}")

    def pairs(self) -> list[Pair]:
        others = [j for j in range(self.k) if j != self.index]
        return [(self.index, j) if self.positive else (j, self.index) for j in others]

    def records(self, event: FeedbackEvent) -> tuple[list[Record], str | None]:
        """One weighted ``{"prompt", "chosen", "rejected", "weight"}`` per pair."""
        out = [{"id": f"{event.id}#{a}-{b}", "prompt": event.prompt, "chosen": event.completions[a],
                "rejected": event.completions[b], "weight": self.weight} | provenance(event)
               for a, b in self.pairs()]
        return out, None if out else "an implicit signal on one reply states no preference"


@dataclass(frozen=True)
class Regenerate(Implicit):
    """``regenerate: i``: the user asked for another reply instead of completion i (the later replies beat it)."""

    field: ClassVar[str] = "regenerate"
    weight: ClassVar[float] = 0.5
    positive: ClassVar[bool] = False


@dataclass(frozen=True)
class Copy(Implicit):
    """``copy: i``: the user copied completion i (it beats the other replies they were shown)."""

    field: ClassVar[str] = "copy"
    attribute: ClassVar[str | None] = "copy_"
    weight: ClassVar[float] = 0.5
    positive: ClassVar[bool] = True


@dataclass(frozen=True)
class Continue(Implicit):
    """``continue: i``: the user went on with the conversation after completion i (it beats the others)."""

    field: ClassVar[str] = "continue"
    attribute: ClassVar[str | None] = "continue_"
    weight: ClassVar[float] = 0.2
    positive: ClassVar[bool] = True


@dataclass(frozen=True)
class Abandon(Implicit):
    """``abandon: i``: the user left after completion i (the other replies beat it)."""

    field: ClassVar[str] = "abandon"
    weight: ClassVar[float] = 0.2
    positive: ClassVar[bool] = False


@dataclass(frozen=True)
class Edit(Implicit):
    """``edit: {"original": i, "edited": j}``: the user edited completion i into completion j, their own text,
    which ranks above it (one pair)."""

    field: ClassVar[str] = "edit"
    weight: ClassVar[float] = 0.8
    positive: ClassVar[bool] = True

    original: int = 0
    """The completion the user edited (``index`` is their edit)."""

    @classmethod
    def of(cls, value: Any, event: FeedbackEvent) -> Judgement:
        return cls(value.edited, len(event.completions), value.original)

    def check(self, k: int) -> None:
        for name, i in (("original", self.original), ("edited", self.index)):
            if not 0 <= i < k:
                raise ValueError(f"field 'edit.{name}' must be an index 0..{k - 1}, got {i}")
        if self.original == self.index:
            raise ValueError("field 'edit': the edited text is another completion than the original")

    def pairs(self) -> list[Pair]:
        return [(self.index, self.original)]


JUDGEMENTS: tuple[type[Judgement], ...] = (Choice, Ranking, Ratings, Regenerate, Copy, Edit, Continue, Abandon)
"""Every form, by the event field that carries it: an event carries exactly one of these fields."""
IMPLICIT: dict[str, type[Implicit]] = {j.field: j for j in JUDGEMENTS if issubclass(j, Implicit)}
"""The implicit forms by name, with their default weights."""


def provenance(event: FeedbackEvent) -> dict[str, str]:
    """The event's source and user as record fields, when it has them (``rewardserve compare`` breaks results
    down by source; ``rewardserve personalize fit`` fits per user)."""
    return ({"source": event.source} if event.source else {}) | ({"user": event.user} if event.user else {})


def preferred_pairs(event: FeedbackEvent) -> list[Pair]:
    """Every strict preference the event states: a choice beats each other completion, a ranking's groups
    beat the groups below them, and a higher rating beats a lower one (ties and unrated completions say
    nothing)."""
    return event.judgement.pairs()


def rating_pairs(ratings: Sequence[Rating]) -> list[Pair]:
    """(better, worse) for every two rated completions whose ratings differ."""
    pairs = []
    for i, j in itertools.combinations(range(len(ratings)), 2):
        a, b = ratings[i], ratings[j]
        if a is None or b is None or a == b:
            continue
        pairs.append((i, j) if a > b else (j, i))
    return pairs


def check_ratings(field: str, values: Sequence[Rating], k: int, scale: tuple[float, float] | None) -> None:
    """Raise ``ValueError`` unless ``values`` are k ratings: thumbs without ``scale``, else within it."""
    if len(values) != k:
        raise ValueError(f"field '{field}' must hold {k} values, one per completion (null: not rated)")
    rated = [r for r in values if r is not None]
    if scale is None:
        if any(r not in (1, -1) for r in rated):
            raise ValueError(f"field '{field}': thumbs are +1 or -1 (null: not rated); declare 'scale': [lo, hi] "
                             "for another scale")
        return
    lo, hi = scale
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError("field 'scale' must be [lo, hi] with lo < hi")
    if any(not (math.isfinite(r) and lo <= r <= hi) for r in rated):
        raise ValueError(f"field '{field}': every rating must lie in the scale [{lo:g}, {hi:g}]")


def scored_correctly(scores: Sequence[float], pairs: Sequence[Pair]) -> int:
    """How many ``pairs`` the scores order the same way (strictly: a tie is wrong, as in training's accuracy)."""
    return sum(1 for a, b in pairs if scores[a] > scores[b])
