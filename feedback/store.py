"""The feedback store: SQLite (embedded default) or PostgreSQL (several replicas, one database).

This is the one module that talks to the database. It writes a batch of events in one transaction,
all or nothing, with the client's ids as idempotency keys (``INSERT … ON CONFLICT DO NOTHING RETURNING``,
so two writers racing on one id cannot both store it); it reads events back for export, stats and
training; and it deletes for retention and erasure. Every database failure leaves here as
:class:`~feedback.errors.FeedbackUnavailable`; callers never see SQLAlchemy's or a driver's exceptions.

Durability: SQLite runs in WAL mode with ``synchronous=FULL``, so a committed batch survives a crash of
the process or the machine; PostgreSQL commits are durable by its defaults. A batch is acknowledged only
after its commit returns.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, create_engine, delete, event, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from feedback.errors import Conflict, FeedbackUnavailable, InvalidFeedback
from feedback.events import FeedbackEvent, hash_content, item_key
from feedback.schema import EventRow, ProfileRow

_ALEMBIC = threading.Lock()
"""One migration at a time in this process (see :meth:`FeedbackStore.migrate`)."""
log = logging.getLogger(__name__)

EVENTS = cast(Table, EventRow.__table__)
"""The table itself, for Core statements (the ORM's bulk path costs more per row)."""

BUSY_TIMEOUT_MS = 5000
"""SQLite: how long a writer waits for another's lock before the batch is refused (503, retry)."""
CONNECT_TIMEOUT_S = 3
"""PostgreSQL: how long a connection attempt may take before the batch is refused (503, retry)."""
STATEMENT_TIMEOUT_MS = 15000
MIGRATION_LOCK = 0x72657764  # PostgreSQL advisory lock id: one replica migrates, the others wait for it


def database_url(value: str) -> str:
    """A SQLAlchemy URL for ``value``: a URL as given (``postgresql://`` picks psycopg 3), or a file path
    as SQLite."""
    if "://" not in value:
        path = Path(value).expanduser().resolve()
        return f"sqlite:///{path}"
    if value.startswith("postgresql://") or value.startswith("postgres://"):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


@dataclass(frozen=True)
class Filters:
    """Which events a read takes: created in [since, until), from one source, annotator or user, and about the
    items (prompt and completions) that annotator ``items_of`` judged."""

    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None
    annotator: str | None = None
    items_of: str | None = None
    user: str | None = None

    def where(self) -> list[Any]:
        """SQLAlchemy conditions."""
        out: list[Any] = []
        if self.since is not None:
            out.append(EventRow.created_at >= naive_utc(self.since))
        if self.until is not None:
            out.append(EventRow.created_at < naive_utc(self.until))
        if self.source is not None:
            out.append(EventRow.source == self.source)
        if self.annotator is not None:
            out.append(EventRow.annotator == self.annotator)
        if self.user is not None:
            out.append(EventRow.user_id == self.user)
        if self.items_of is not None:
            out.append(EventRow.item_key.in_(select(EventRow.item_key).where(EventRow.annotator == self.items_of)))
        return out


EVERYTHING = Filters()
"""No filter: every event."""


@dataclass(frozen=True)
class StoredEvent:
    """An event as read back: what the client sent, and when it was judged (UTC)."""

    event: FeedbackEvent
    created_at: datetime


def naive_utc(moment: datetime) -> datetime:
    """``moment`` in UTC without tzinfo, as stored (a naive input is taken to be UTC already)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class FeedbackStore:
    """Events in one database. Thread-safe: every call takes its own pooled connection.

    The schema is migrated on first use rather than at construction, so a server whose database is
    down at start still starts (scoring does not need it) and takes feedback once the database is back.
    """

    def __init__(self, url: str, pool_size: int = 4, must_exist: bool = False) -> None:
        """``must_exist``: a reader's store; a SQLite file that is not there is an error, not a new database."""
        self.url = database_url(url)
        try:
            parsed = make_url(self.url)
            self.dialect = parsed.get_backend_name()
            if self.dialect == "sqlite":
                if parsed.database in (None, "", ":memory:"):
                    raise InvalidFeedback("the feedback store needs a file: in-memory SQLite is lost on exit")
                if must_exist and not Path(parsed.database).is_file():
                    raise InvalidFeedback(f"no feedback database at {parsed.database}")
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self.engine = self._sqlite_engine(pool_size)
            elif self.dialect == "postgresql":
                self.engine = create_engine(
                    self.url, pool_size=pool_size, max_overflow=0, pool_timeout=CONNECT_TIMEOUT_S * 2,
                    pool_pre_ping=True, hide_parameters=True,
                    connect_args={"connect_timeout": CONNECT_TIMEOUT_S,
                                  "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"})
            else:
                raise InvalidFeedback(f"unsupported feedback database {redact(self.url)}: use a SQLite path or "
                                      "sqlite:///…, or postgresql://…")
        except (ArgumentError, NoSuchModuleError) as exc:
            raise InvalidFeedback(f"cannot use feedback database {redact(self.url)}: {exc} (PostgreSQL needs "
                                  "pip install 'rewardserve[postgres]')") from None
        self._migrated = False
        self._migrate_lock = threading.Lock()

    def _sqlite_engine(self, pool_size: int) -> Engine:
        engine = create_engine(self.url, pool_size=pool_size, max_overflow=0, hide_parameters=True,
                               connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _use_wal(cursor)  # readers (stats, export) never block the writers
            cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged batch survives a power cut too
            cursor.close()

        return engine

    # schema

    def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic); concurrent callers, in any process, serialize."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        # _ALEMBIC: Alembic's ``context`` and ``op`` are module globals, so two stores of one process (two apps in
        # one test process, say) migrating at once would trip over each other; across processes the lock below
        with _ALEMBIC, self.translating("migrating"), self.engine.connect() as conn:
            self._lock_for_migration(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        self._migrated = True

    def _lock_for_migration(self, conn: Connection) -> None:
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock: another process's migration waits

    def ready(self) -> None:
        """Migrate the schema on first use (see the class docstring)."""
        if not self._migrated:
            with self._migrate_lock:
                if not self._migrated:
                    self.migrate()

    # writing

    def add(self, events: Sequence[FeedbackEvent], now: datetime) -> set[str]:
        """Store ``events`` in one transaction; return the ids stored now (the others were duplicates).

        Raises :class:`Conflict` (nothing stored) when an id is stored already, or repeated in the batch,
        with other content."""
        self.ready()
        with self.translating("storing feedback"), self.engine.begin() as conn:
            return self.insert(conn, events, now)

    def insert(self, conn: Connection, events: Sequence[FeedbackEvent], now: datetime) -> set[str]:
        """:meth:`add` inside the caller's transaction (the labeling queue records an assignment with it)."""
        rows: dict[str, dict[str, Any]] = {}
        for i, e in enumerate(events):
            row = _row(e, now)
            seen = rows.setdefault(e.id, row)
            if seen["content_hash"] != row["content_hash"]:
                raise Conflict(f"events[{i}]: id {e.id!r} appears twice in the batch with different content")
        # one cached statement run over the rows (SQLAlchemy batches them into multi-row INSERTs): a
        # statement built with .values(rows) compiles anew for every batch, ~0.5 ms per event
        stmt = self.insert_ignoring(EVENTS, ["id"]).returning(EVENTS.c.id)
        # in id order: two PostgreSQL transactions inserting shared ids then lock them in the same
        # order and never deadlock
        inserted = set(conn.execute(stmt, [rows[i] for i in sorted(rows)]).scalars())
        others = [i for i in rows if i not in inserted]
        if others:
            query = select(EventRow.id, EventRow.content_hash).where(EventRow.id.in_(others))
            stored = {i: h for i, h in conn.execute(query)}
            clash = [i for i in others if stored.get(i) != rows[i]["content_hash"]]
            if clash:  # raising out of the caller's block rolls the whole transaction back
                shown = ", ".join(repr(i) for i in clash[:5])
                raise Conflict(f"{len(clash)} event id(s) are stored already with different content: {shown} "
                               "(an id names one event: send a new id for a new judgement)")
        return inserted

    def insert_ignoring(self, table: Table, keys: list[str]) -> Any:
        """``INSERT … ON CONFLICT (keys) DO NOTHING`` in this database's dialect."""
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        return insert(table).on_conflict_do_nothing(index_elements=keys)

    def prune(self, before: datetime | None = None, annotator: str | None = None, user: str | None = None) -> int:
        """Delete events created before ``before``, or by ``annotator``, or about ``user`` (metadata.user, whose
        personal-reward profiles are deleted with them); return how many events. At least one criterion is required;
        several must all hold."""
        where = [cond for cond in (None if before is None else EventRow.created_at < naive_utc(before),
                                   None if annotator is None else EventRow.annotator == annotator,
                                   None if user is None else EventRow.user_id == user) if cond is not None]
        if not where:
            raise InvalidFeedback("say what to delete: --before, --annotator or --user")
        self.ready()
        with self.translating("deleting feedback"), self.engine.begin() as conn:
            deleted = int(conn.execute(delete(EventRow).where(*where)).rowcount)
            if user is not None:  # erasure: the user's profiles go with their judgements, in the same transaction
                conn.execute(delete(ProfileRow).where(ProfileRow.user_id == user))
            return deleted

    # reading

    def events(self, filters: Filters = EVERYTHING) -> Iterator[StoredEvent]:
        """Events matching ``filters``, oldest first, streamed from the database."""
        self.ready()
        query = select(EventRow.body, EventRow.created_at).where(*filters.where()).order_by(EventRow.created_at,
                                                                                             EventRow.id)
        with self.translating("reading feedback"), self.engine.connect() as conn:
            for body, created in conn.execution_options(yield_per=1000).execute(query):
                yield StoredEvent(FeedbackEvent.model_validate(body), created.replace(tzinfo=UTC))

    def counts(self, column: str, filters: Filters = EVERYTHING, limit: int = 0) -> dict[str, int]:
        """Events per value of ``column`` (form, source, annotator, reward_model or day), most first."""
        self.ready()
        key = func.date(EventRow.created_at) if column == "day" else getattr(EventRow, column)
        n = func.count()
        query = select(key, n).where(*filters.where()).group_by(key).order_by(n.desc(), key)
        if limit:
            query = query.limit(limit)
        with self.translating("counting feedback"), self.engine.connect() as conn:
            return {("none" if k is None else str(k)): int(v) for k, v in conn.execute(query)}

    def ping(self) -> None:
        """Raise :class:`FeedbackUnavailable` unless the database answers."""
        with self.translating("checking the database"), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    @contextlib.contextmanager
    def translating(self, doing: str) -> Iterator[None]:
        """The boundary: a database failure becomes :class:`FeedbackUnavailable`. Messages name the
        driver's error only: with ``hide_parameters`` no stored text reaches them, or the logs; nor does
        the database's address reach HTTP clients (the CLI adds it to its own messages)."""
        try:
            yield
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0][:200] if exc.orig is not None else type(exc).__name__
            raise FeedbackUnavailable(f"the feedback database failed while {doing}: {reason}") from None
        except SQLAlchemyError as exc:  # pool timeout, closed engine
            raise FeedbackUnavailable(f"the feedback database failed while {doing}: {type(exc).__name__}") \
                from None


def _row(e: FeedbackEvent, now: datetime) -> dict[str, Any]:
    body = e.content()
    return {"id": e.id, "content_hash": hash_content(body), "form": e.form, "source": e.source,
            "annotator": e.annotator, "policy": e.policy, "reward_model": e.reward_model, "user_id": e.user,
            "item_key": item_key(e.prompt, e.completions), "created_at": naive_utc(e.created(now)),
            "received_at": naive_utc(now), "body": body}


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode (the mode is kept in the file, so this changes it once).

    Changing the journal mode needs the database to itself, and SQLite answers "database is locked" at once,
    without its busy handler, while another connection is opening the same new file: so ask first, and
    retry the change until the busy timeout, as the busy handler would."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("database is locked: could not switch it to WAL mode")
        time.sleep(0.01)
