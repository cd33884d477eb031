"""The store's tables: ``feedback_events`` (an event per row, its client id the primary key), the
labeling queue's ``label_tasks`` and ``label_assignments`` (revision 0002), personal rewards'
``user_profiles`` (revision 0003), and the loop's ``retrain_rounds`` (revision 0004).

The columns filters and counts need are real columns (indexed where a query selects on them); the rest of
the event (prompt, completions, judgement, scores, metadata) is one JSON document, ``body``, exactly
what the client sent. Times are naive UTC, which SQLite and PostgreSQL compare alike.
Changing this table means adding an Alembic revision under ``feedback/migrations/versions``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base with the store's naming convention (stable constraint names for migrations)."""

    metadata = MetaData(naming_convention={"ix": "ix_%(table_name)s_%(column_0_name)s",
                                           "pk": "pk_%(table_name)s"})


class EventRow(Base):
    """One stored feedback event."""

    __tablename__ = "feedback_events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    form: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(64), index=True)
    annotator: Mapped[str | None] = mapped_column(String(256), index=True)
    policy: Mapped[str | None] = mapped_column(String(256))
    reward_model: Mapped[str | None] = mapped_column(String(256))
    user_id: Mapped[str | None] = mapped_column(String(256), index=True)
    item_key: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime())
    body: Mapped[dict[str, Any]] = mapped_column(JSON())

    __table_args__ = (Index("ix_feedback_events_form_created_at", "form", "created_at"),)


class TaskRow(Base):
    """One item waiting for human judgement: a prompt and k completions, with a priority."""

    __tablename__ = "label_tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The item key (hash of prompt and completions): the same item is queued once."""
    prompt: Mapped[Any] = mapped_column(JSON())
    completions: Mapped[list[str]] = mapped_column(JSON())
    source: Mapped[str] = mapped_column(String(64))
    priority: Mapped[float] = mapped_column(Float())
    done: Mapped[int] = mapped_column(Integer())
    """Annotators who have judged it."""
    created_at: Mapped[datetime] = mapped_column(DateTime())

    __table_args__ = (Index("ix_label_tasks_done_priority", "done", "priority"),)


class AssignmentRow(Base):
    """One annotator's judgement of one task (the event it became is in ``feedback_events``)."""

    __tablename__ = "label_assignments"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotator: Mapped[str] = mapped_column(String(256), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128))
    done_at: Mapped[datetime] = mapped_column(DateTime())


class ProfileRow(Base):
    """One user's weights on one set of basis heads (:mod:`rewardmodel.personal`), fitted from their judgements."""

    __tablename__ = "user_profiles"

    user_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    basis: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The basis heads' content id: a refitted basis needs profiles of its own."""
    weights: Mapped[list[float]] = mapped_column(JSON())
    judgements: Mapped[int] = mapped_column(Integer())
    """The pairs the weights were fitted from."""
    fitted_at: Mapped[datetime] = mapped_column(DateTime())


class RoundRow(Base):
    """One round of ``rewardserve retrain``: what it decided, the versions involved, and its whole report."""

    __tablename__ = "retrain_rounds"

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    """The served name the round retrained."""
    round: Mapped[int] = mapped_column(Integer())
    result: Mapped[str] = mapped_column(String(16))
    """promoted, exported, refused, skipped or rolled_back."""
    version: Mapped[str | None] = mapped_column(String(64))
    """What the server answers with now (after a promotion or a rollback), as clients see it (x-model-version)."""
    parent_version: Mapped[str | None] = mapped_column(String(64))
    parent_path: Mapped[str | None] = mapped_column(String(1024))
    candidate_path: Mapped[str | None] = mapped_column(String(1024))
    parent_accuracy: Mapped[float | None] = mapped_column(Float())
    """The parent's live accuracy on human judgements when it was replaced (None: too few scored judgements)."""
    finished_at: Mapped[datetime] = mapped_column(DateTime())
    report: Mapped[dict[str, Any]] = mapped_column(JSON())
