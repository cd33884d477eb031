"""``POST /feedback``, ``GET /feedback/stats`` and the labeling routes: the routers the service mounts.

The database work runs on :class:`~feedback.service.FeedbackService`'s threads. The service gives the
router its dependencies (API keys, the drain's accounting) and the shape of its error answers; this
package imports no other stage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, params
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from feedback.errors import InvalidFeedback
from feedback.events import RANGE, FeedbackAccepted, FeedbackBatch, Moment, Rating, utc_now
from feedback.queue import LabelQueue, LabelTask
from feedback.service import FeedbackService
from feedback.stats import annotator_agreement
from feedback.store import Filters


def feedback_router(service: FeedbackService, dependencies: Sequence[params.Depends],
                    responses: dict[int | str, dict[str, Any]]) -> APIRouter:
    """The routes, behind ``dependencies`` (the service's key check and admission), documenting ``responses``."""
    router = APIRouter(dependencies=list(dependencies), responses=responses, tags=["feedback"])

    @router.post("/feedback", response_model=FeedbackAccepted, summary="Store human judgements of completions")
    async def post_feedback(body: FeedbackBatch) -> FeedbackAccepted:
        """Store a batch of events, all or nothing. An event's ``id`` is its idempotency key: resending it
        with the same content counts as a duplicate; with other content it is a 409 ``conflict``."""
        return await service.add(body)

    @router.get("/feedback/stats", summary="Counts, inter-annotator agreement and live accuracy")
    async def get_stats(since: Annotated[Moment | None, Query(description=f"RFC 3339, {RANGE}; from then")] = None,
                        until: Annotated[Moment | None, Query(description=f"RFC 3339, {RANGE}; before then")] = None,
                        source: Annotated[str | None, Query(max_length=64, description="only this source")] = None,
                        ) -> dict[str, Any]:
        """What ``rewardserve feedback stats`` prints, for the events in the window."""
        return await service.stats(Filters(since=since, until=until, source=source))

    return router


MAX_TASKS_PER_REQUEST = 1000
TaskId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_-]{1,64}$")]
"""A task's id (a hex digest) as clients send it back: a word of at most 64 characters, so no NUL or other text
reaches a store that holds none (PostgreSQL's text cannot hold NUL)."""
PAGE = Path(__file__).parent / "static" / "label.html"


class TaskBatch(BaseModel):
    """``POST /label/tasks``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[LabelTask] = Field(min_length=1, max_length=MAX_TASKS_PER_REQUEST)


class Judgement(BaseModel):
    """``POST /label/submit``: one annotator's judgement of one task: a ranking (ties as nested lists), a choice,
    or ratings (thumbs, or on a ``scale`` with per-criterion ``criteria``), checked by the event rules."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    ranking: list[StrictInt | list[StrictInt]] | None = None
    choice: StrictInt | None = None
    ratings: list[Rating] | None = None
    scale: tuple[float, float] | None = None
    criteria: dict[str, list[Rating]] | None = None

    def judgement(self) -> dict[str, Any]:
        """The event fields it sets; exactly one of ranking, choice or ratings."""
        given = {k: v for k, v in self.model_dump(exclude={"task_id"}).items() if v is not None}
        if sum(k in given for k in ("ranking", "choice", "ratings")) != 1:
            raise InvalidFeedback("send exactly one of 'ranking', 'choice' or 'ratings'")
        return given


class Queued(BaseModel):
    """``POST /label/tasks``' answer: an item (the same prompt and completions) is queued once."""

    queued: int
    duplicates: int


class Task(BaseModel):
    """A queued item as an annotator sees it."""

    id: str
    prompt: str | list[dict[str, Any]]
    completions: list[str]
    source: str
    judged_by: int = Field(description="annotators who judged it so far")
    wanted: int = Field(description="annotators it is shown to")


class NextTask(BaseModel):
    """``GET /label/next``'s answer."""

    annotator: str
    judged: int = Field(description="tasks this annotator has judged")
    agreement: dict[str, Any] = Field(description="how often this annotator's preferences matched other "
                                                  "annotators' on the same items (ratio null before any)")
    criteria: dict[str, Any] | None = Field(description="the served model's criteria for the sliders")
    task: Task | None = Field(description="null when nothing is left for this annotator")


class Submitted(BaseModel):
    """``POST /label/submit``'s answer."""

    event_id: str
    judged: int


def label_router(service: FeedbackService, queue: LabelQueue, push: Sequence[params.Depends],
                 judge: Sequence[params.Depends], annotator: Callable[..., Awaitable[str]],
                 responses: dict[int | str, dict[str, Any]],
                 criteria: Callable[[], dict[str, Any] | None] = lambda: None) -> APIRouter:
    """The labeling routes: the page, tasks pushed behind ``push`` (the feedback keys), and the annotator's
    next task and submission behind ``judge`` (the drain's accounting), whose ``annotator`` dependency
    names who is judging (from their own key). ``criteria`` gives the served model's criteria
    (``{"names", "scale"}``, or None) for the page's sliders."""
    router = APIRouter(responses=responses, tags=["labeling"])
    who = Depends(annotator)  # a default, not an Annotated alias: this module's annotations are strings

    @router.get("/label", response_class=HTMLResponse, summary="The labeling page", include_in_schema=True)
    async def page() -> HTMLResponse:
        """One self-contained page (no build step, no external assets)."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @router.post("/label/tasks", dependencies=list(push), summary="Queue items for annotators")
    async def push_tasks(body: TaskBatch) -> Queued:
        """How many were queued; an item (the same prompt and completions) is queued once."""
        queued = await service.run(queue.add, body.tasks, utc_now())
        return Queued(queued=queued, duplicates=len(body.tasks) - queued)

    @router.get("/label/next", dependencies=list(judge), summary="The next task for this annotator")
    async def next_task(skip: Annotated[list[TaskId] | None, Query(max_length=100)] = None,
                        name: str = who) -> NextTask:
        """The annotator's next task (null when none is left), their count and their agreement with others."""
        task = await service.run(queue.next, name, skip or [])
        return NextTask(annotator=name, judged=await service.run(queue.annotator_count, name),
                        agreement=await service.run(annotator_agreement, queue.store, name), criteria=criteria(),
                        task=None if task is None else Task(**task))

    @router.post("/label/submit", dependencies=list(judge), summary="Store this annotator's judgement of a task")
    async def submit(body: Judgement, name: str = who) -> Submitted:
        """The judgement becomes a feedback event (source ``labeling``, this annotator) in the same
        transaction that counts it; resubmitting is a duplicate, never a second vote."""
        try:
            event_id = await service.run(queue.submit, body.task_id, name, body.judgement(), utc_now())
        except ValidationError as exc:  # the event rules (a ranking that is not a permutation, …)
            raise InvalidFeedback("; ".join(e["msg"] for e in exc.errors())) from None
        return Submitted(event_id=event_id, judged=await service.run(queue.annotator_count, name))

    return router
