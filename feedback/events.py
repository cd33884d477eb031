"""A feedback event: one human judgement of k completions of one prompt (the ``POST /feedback`` schema).

The judgement is exactly one of:

- ``choice: i`` — completion i is preferred over each of the others;
- ``ranking: [best … worst]`` — a nested list is a tie group (``[[0, 2], 1]``);
- ``ratings: [r, …]`` — one per completion, null for not rated. Without ``scale`` they are thumbs (+1/−1);
  with ``scale: [lo, hi]`` any number in that range. ``criteria: {"name": [r, …]}`` adds per-criterion
  ratings on the same scale;
- an implicit signal a chat UI sees without asking, a weak weighted preference in training: ``regenerate: i``,
  ``copy: i``, ``continue: i``, ``abandon: i``, or ``edit: {"original": i, "edited": j}``
  (:class:`feedback.judgements.Implicit`).

The rules are checked here, so a stored event is always well formed; :func:`content_hash` is what makes
the client's ``id`` an idempotency key (the same id with the same content is a duplicate, not a new event).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from feedback.judgements import JUDGEMENTS, Form, Judgement, check_ratings
from rewardmodel.conversation import validate_messages
from rewardmodel.errors import FormatError

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
"""The instants a date/time field takes, ``EARLIEST <= t < LATEST`` in UTC: wide enough for any judgement, and
far from the ends of Python's (and the stores') calendar, where converting an offset to UTC overflows (year 0001
at +00:01, year 9999 at -00:01)."""
RANGE = f"from {EARLIEST:%Y-%m-%dT%H:%M:%SZ} to before {LATEST:%Y-%m-%dT%H:%M:%SZ}"


def in_range(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive one is taken to be UTC), or ``ValueError`` naming the range: one spelling per
    instant, so a retry that writes the time in another zone hashes the same."""
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:  # the offset moves it past year 1 or year 9999
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be {RANGE}, got {moment.isoformat()}")
    return utc


Moment = Annotated[datetime, AfterValidator(in_range)]
"""A date/time field: RFC 3339, in :data:`EARLIEST` to :data:`LATEST`, kept in UTC."""

MAX_EVENTS = 1000
"""Events in one ``POST /feedback``; a client with more sends several batches."""
MAX_COMPLETIONS = 64
MAX_LABEL_COMPLETIONS = 9
"""Completions of one labeling task: the page ranks them with the keys 1-9."""
MAX_METADATA_BYTES = 16 * 1024

Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
# sources become a Prometheus label: a short identifier, not free text
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
# strict: JSON's true is not the index 1, nor a thumbs up
Number = Annotated[float, Strict()]
Rating = Number | None


def distinct(completions: list[str]) -> list[str]:
    """``completions`` when no text repeats (events and labeling tasks): one text cannot be judged two ways."""
    if len(set(completions)) != len(completions):
        raise ValueError("completions must be distinct: the same text cannot be judged two ways")
    return completions


class EditedReply(BaseModel):
    """An ``edit`` signal: completion ``original`` was edited by the user into completion ``edited``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    original: StrictInt
    edited: StrictInt


class FeedbackEvent(BaseModel):
    """One judgement of ``completions`` for ``prompt`` (see the module docstring for the forms)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="the client's key for this event: retrying with the same id never stores it twice")
    prompt: str | list[dict[str, Any]] = Field(description="a string, or chat messages ending before the reply")
    completions: Annotated[list[str], AfterValidator(distinct)] = Field(
        min_length=1, max_length=MAX_COMPLETIONS, description="k distinct replies")
    choice: StrictInt | None = Field(None, description="index of the preferred completion")
    ranking: list[StrictInt | list[StrictInt]] | None = Field(None, description="indices best first; a nested "
                                                                                "list is a tie group")
    ratings: list[Rating] | None = Field(None, description="one per completion (null: not rated)")
    regenerate: StrictInt | None = Field(None, description="implicit: the user asked for another reply instead of "
                                                           "this completion")
    # ``copy_``/``continue_``: ``copy`` is a pydantic method and ``continue`` a keyword; the wire says copy/continue
    copy_: StrictInt | None = Field(None, alias="copy", description="implicit: the user copied this completion")
    edit: EditedReply | None = Field(None, description="implicit: the user edited one completion into another")
    continue_: StrictInt | None = Field(None, alias="continue", description="implicit: the user went on after this "
                                                                           "completion")
    abandon: StrictInt | None = Field(None, description="implicit: the user left after this completion")
    scale: tuple[float, float] | None = Field(None, description="[lo, hi] of ratings; absent: thumbs, +1/-1")
    criteria: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], list[Rating]] | None = Field(
        None, max_length=32, description="per-criterion ratings, one per completion, on the ratings' scale")
    annotator: Name | None = None
    source: SourceName | None = Field(None, description="where the judgement was made, e.g. chat-ui, labeling")
    policy: Name | None = Field(None, description="the model that wrote the completions")
    scores: list[Number] | None = Field(None, description="the rewards the reward model gave these completions")
    reward_model: Name | None = Field(None, description="the model id that gave `scores`")
    created_at: Annotated[AwareDatetime, AfterValidator(in_range)] | None = Field(
        None, description=f"RFC 3339 with an offset, {RANGE}; default: the server's time")
    metadata: dict[str, Any] | None = Field(None, description="anything else, at most 16 KB as JSON; "
                                                              "metadata.user names the user for erasure")

    @field_validator("prompt")
    @classmethod
    def _messages(cls, prompt: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(prompt, list):
            try:
                validate_messages(prompt, "prompt")
            except FormatError as exc:
                raise ValueError(str(exc)) from None
        return prompt


    @field_validator("scores")
    @classmethod
    def _finite(cls, scores: list[float] | None) -> list[float] | None:
        if scores is not None and not all(math.isfinite(s) for s in scores):
            raise ValueError("scores must be finite numbers")
        return scores

    @field_validator("metadata")
    @classmethod
    def _small(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if metadata is None:
            return None
        if len(json.dumps(metadata, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON")
        if "user" in metadata and not isinstance(metadata["user"], str):
            raise ValueError("metadata.user must be a string (it names the user for erasure requests)")
        return metadata

    @model_validator(mode="after")
    def _judgement(self) -> FeedbackEvent:
        given = [j.field for j in JUDGEMENTS if getattr(self, j.attribute or j.field) is not None]
        if len(given) != 1:
            raise ValueError(f"an event carries exactly one judgement: {', '.join(j.field for j in JUDGEMENTS)} "
                             f"(got {', '.join(given) or 'none'})")
        k = len(self.completions)
        if self.scale is not None and self.ratings is None:
            raise ValueError("field 'scale' belongs to ratings")
        self.judgement.check(k)
        for name, values in (self.criteria or {}).items():
            check_ratings(f"criteria.{name}", values, k, self.scale)
        if self.scores is not None and len(self.scores) != k:
            raise ValueError(f"field 'scores' must hold {k} numbers, one per completion")
        if (self.scores is None) != (self.reward_model is None):
            raise ValueError("fields 'scores' and 'reward_model' come together: the scores and the model that gave "
                             "them")
        return self

    @property
    def judgement(self) -> Judgement:
        """The judgement as its form's class (:mod:`feedback.judgements`)."""
        for form in JUDGEMENTS:  # the validator guarantees exactly one
            value = getattr(self, form.attribute or form.field)
            if value is not None:
                return form.of(value, self)
        raise AssertionError("an event without a judgement")

    @property
    def form(self) -> Form:
        """choice, ranking, ratings (a declared scale), thumbs (+1/−1), or an implicit signal's name."""
        return self.judgement.form

    @property
    def user(self) -> str | None:
        """``metadata.user``: whose conversation this was, for erasure requests."""
        return (self.metadata or {}).get("user")

    def content(self) -> dict[str, Any]:
        """What the client sent, as JSON (the server's defaults left out)."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`content`: equal for a retry of the same event."""
        return hash_content(self.content())

    def created(self, now: datetime) -> datetime:
        """When the judgement was made, in UTC (``now`` when the client did not say)."""
        return (self.created_at or now).astimezone(UTC)


class FeedbackBatch(BaseModel):
    """The body of ``POST /feedback``: stored all together, or not at all."""

    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class FeedbackAccepted(BaseModel):
    """The answer to ``POST /feedback``: every event is stored now (new ones counted in ``accepted``)."""

    accepted: int = Field(description="events stored by this request")
    duplicates: int = Field(description="events whose id was stored before with the same content")


def hash_content(content: dict[str, Any]) -> str:
    """sha256 of an event's content as canonical JSON (what :meth:`FeedbackEvent.content_hash` returns)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def item_key(prompt: str | list[dict[str, Any]], completions: list[str]) -> str:
    """The same prompt and the same set of completions, in any order: what annotators can agree on."""
    text = json.dumps([prompt, sorted(completions)], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def utc_now() -> datetime:
    """The server's time, in UTC."""
    return datetime.now(UTC)
