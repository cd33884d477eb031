"""What the importers from other labeling tools share: reading their export files, naming events, storing.

An import is all or nothing: every judgement of the file is parsed and checked first (an error names the
record and the field), then stored in batches; an event id is derived from the tool's own ids, so importing
the same file again stores nothing twice (a changed judgement under the same ids is a 409 conflict, never
a silent second vote). What an import cannot use (cancelled annotations, drafts, question types that carry
no preference) is counted in ``skipped``, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from feedback.errors import InvalidFeedback
from feedback.events import MAX_EVENTS, FeedbackEvent
from feedback.store import FeedbackStore

PROMPT_FIELDS = ("prompt", "instruction", "input", "question", "query")
"""Where a prompt is looked for when ``--prompt-field`` is not given, in this order."""
MAX_ID = 128


@dataclass
class Imported:
    """The events parsed from a file, and what could not become one (reason -> count)."""

    tool: str
    records: int = 0
    events: list[FeedbackEvent] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, where: str, **event: Any) -> None:
        """Check and keep one event (``where`` names the record in an error)."""
        try:
            self.events.append(FeedbackEvent.model_validate({"source": self.tool, **event}))
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors())
            raise InvalidFeedback(f"{where}: {detail}") from None


def read_records(path: Path) -> list[Any]:
    """A JSON array (the tools' JSON exports) or JSON Lines (one record per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidFeedback(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise InvalidFeedback(f"{path}: not JSON or JSON Lines (line {exc.lineno}: {exc.msg})") from None
    if not all(isinstance(r, dict) for r in records):
        raise InvalidFeedback(f"{path}: expected a list of JSON objects, one per record")
    return records


def prompt_of(data: Mapping[str, Any], name: str | None, where: str) -> Any:
    """The prompt: field ``name``, or the first of :data:`PROMPT_FIELDS` the record has."""
    names = (name,) if name else PROMPT_FIELDS
    for n in names:
        if n in data and isinstance(data[n], str | list):
            return data[n]
    raise InvalidFeedback(f"{where}: no prompt field {' or '.join(repr(n) for n in names)} (its fields: "
                          f"{', '.join(sorted(data)) or 'none'}); name it with --prompt-field")


def event_id(*parts: Any) -> str:
    """``tool:part:part…``, or a hash of it when longer than an event id may be."""
    text = ":".join(str(p) for p in parts)
    return text if len(text) <= MAX_ID else f"{parts[0]}:{hashlib.sha256(text.encode()).hexdigest()}"


def parse_moment(value: Any) -> datetime | None:
    """An ISO 8601 time with a zone (what both tools write), else None (the import's own time is used)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def store_imported(store: FeedbackStore, imported: Imported, now: datetime) -> dict[str, Any]:
    """Store the events in batches (each all or nothing); the import's report."""
    stored = 0
    events: Sequence[FeedbackEvent] = imported.events
    for start in range(0, len(events), MAX_EVENTS):
        stored += len(store.add(events[start:start + MAX_EVENTS], now))
    forms = Counter(e.form for e in events)
    return {"from": imported.tool, "records": imported.records, "events": len(events), "stored": stored,
            "duplicates": len(events) - stored, "by_form": dict(forms), "skipped": dict(imported.skipped)}
