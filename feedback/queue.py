"""The labeling queue: items waiting for human judgement, each shown to ``per_task`` different annotators.

Items come from teams (``POST /label/tasks``) or, with ``--collect-for-labeling``, from live traffic that
the reward model was unsure about (the service hands them over; this stage decides nothing about models).
An item is queued once (its id is the item key: the prompt and the set of completions). An annotator gets
the highest-priority item they have not judged that still needs judgements; their ranking is stored as an
ordinary feedback event (form ``ranking``, source ``labeling``, their annotator id) in the same transaction
that records the assignment, so a judgement is never counted without its event or stored twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import Table, func, select, update

from feedback.errors import UnknownTask
from feedback.events import MAX_LABEL_COMPLETIONS, FeedbackEvent, SourceName, distinct, item_key
from feedback.schema import AssignmentRow, TaskRow
from feedback.store import FeedbackStore, naive_utc

TASKS = cast(Table, TaskRow.__table__)
ASSIGNMENTS = cast(Table, AssignmentRow.__table__)


class LabelTask(BaseModel):
    """An item for annotators: a prompt and 2–9 completions (the page ranks them with the keys 1–9)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | list[dict[str, Any]] = Field(description="a string, or chat messages ending before the replies")
    completions: Annotated[list[str], AfterValidator(distinct)] = Field(
        min_length=2, max_length=MAX_LABEL_COMPLETIONS, description="distinct replies")
    source: SourceName = Field("api", description="where the item came from, e.g. api, live-rerank")
    priority: float = Field(0.0, allow_inf_nan=False, description="higher is shown first (live items: the "
                                                                  "model's uncertainty)")

    @property
    def id(self) -> str:
        """The item key: the same prompt and completions are one task, whoever sends them."""
        return item_key(self.prompt, self.completions)


class LabelQueue:
    """Queue operations on the feedback store's database (its engine, schema and error translation)."""

    def __init__(self, store: FeedbackStore, per_task: int) -> None:
        self.store = store
        self.per_task = per_task

    def add(self, tasks: Sequence[LabelTask], now: datetime) -> int:
        """Queue ``tasks``; returns how many were new (the others were queued before)."""
        rows = {t.id: {"id": t.id, "prompt": t.prompt, "completions": t.completions, "source": t.source,
                       "priority": t.priority, "done": 0, "created_at": naive_utc(now)} for t in tasks}
        self.store.ready()
        with self.store.translating("queueing tasks"), self.store.engine.begin() as conn:
            stmt = self.store.insert_ignoring(TASKS, ["id"]).returning(TASKS.c.id)
            return len(set(conn.execute(stmt, [rows[i] for i in sorted(rows)]).scalars()))

    def next(self, annotator: str, skip: Sequence[str] = ()) -> dict[str, Any] | None:
        """The highest-priority task (oldest first among equals) that ``annotator`` has not judged or skipped
        and that fewer than ``per_task`` annotators have; None when there is none."""
        judged = select(AssignmentRow.task_id).where(AssignmentRow.annotator == annotator)
        query = (select(TaskRow.id, TaskRow.prompt, TaskRow.completions, TaskRow.source, TaskRow.done)
                 .where(TaskRow.done < self.per_task, TaskRow.id.not_in(judged), TaskRow.id.not_in(list(skip)))
                 .order_by(TaskRow.priority.desc(), TaskRow.created_at, TaskRow.id).limit(1))
        self.store.ready()
        with self.store.translating("reading the queue"), self.store.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else self._task(row)

    def submit(self, task_id: str, annotator: str, judgement: dict[str, Any], now: datetime) -> str:
        """Store ``annotator``'s judgement of the task (``{"ranking": …}``, ``{"choice": …}`` or ``{"ratings": …}``
        with its ``scale`` and ``criteria``) as a feedback event and count it; a resubmission is a duplicate,
        not a second vote. Returns the event id."""
        self.store.ready()
        with self.store.translating("storing a judgement"), self.store.engine.begin() as conn:
            task = conn.execute(select(TaskRow.prompt, TaskRow.completions).where(TaskRow.id == task_id)).first()
            if task is None:
                raise UnknownTask(f"no labeling task {task_id!r} (it may have been pruned); ask for the next one")
            event_id = f"label-{task_id[:32]}-{annotator}"[:128]
            event = FeedbackEvent.model_validate({"id": event_id, "prompt": task.prompt,
                                                  "completions": task.completions, "annotator": annotator,
                                                  "source": "labeling", **judgement})
            self.store.insert(conn, [event], now)
            assigned = conn.execute(self.store.insert_ignoring(ASSIGNMENTS, ["task_id", "annotator"])
                                    .returning(ASSIGNMENTS.c.task_id),
                                    [{"task_id": task_id, "annotator": annotator, "event_id": event_id,
                                      "done_at": naive_utc(now)}]).first()
            if assigned is not None:
                conn.execute(update(TaskRow).where(TaskRow.id == task_id).values(done=TaskRow.done + 1))
        return event_id

    def pending(self, limit: int = 0) -> list[dict[str, Any]]:
        """The tasks that still need judgements, in the order annotators get them (``limit`` 0: all), for
        labeling elsewhere (``feedback export --to label-studio``)."""
        query = (select(TaskRow.id, TaskRow.prompt, TaskRow.completions, TaskRow.source, TaskRow.done)
                 .where(TaskRow.done < self.per_task)
                 .order_by(TaskRow.priority.desc(), TaskRow.created_at, TaskRow.id))
        self.store.ready()
        with self.store.translating("reading the queue"), self.store.engine.connect() as conn:
            rows = conn.execute(query.limit(limit) if limit else query).all()
        return [self._task(r) for r in rows]

    def _task(self, row: Any) -> dict[str, Any]:
        return {"id": row.id, "prompt": row.prompt, "completions": row.completions, "source": row.source,
                "judged_by": row.done, "wanted": self.per_task}

    def annotator_count(self, annotator: str) -> int:
        """How many tasks ``annotator`` has judged."""
        self.store.ready()
        query = select(func.count()).select_from(AssignmentRow).where(AssignmentRow.annotator == annotator)
        with self.store.translating("counting judgements"), self.store.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
