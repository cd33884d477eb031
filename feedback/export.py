"""From stored judgements to the preference data ``rewardserve train`` reads (rewardmodel.records' forms).

- a choice becomes pairs: ``{"prompt", "chosen", "rejected"}``, one per other completion;
- a ranking keeps the ranking form, tie groups included: ``{"prompt", "completions", "ranking"}``;
- ratings on a declared scale become one pointwise record per rated completion: ``{"prompt", "completion",
  "rating", "scale"}``, with its per-criterion ratings as ``"criteria"``; training gathers the ratings of
  one prompt again and makes pairs of them;
- thumbs become one pointwise record per voted completion: ``{"prompt", "completion", "label": true|false}``;
- an implicit signal (regenerate, copy, edit, continue, abandon) becomes weak pairs: ``{"prompt", "chosen",
  "rejected", "weight"}``, each form's default weight (:data:`feedback.judgements.IMPLICIT`) unless ``weights``
  says otherwise.

``aggregate="majority"`` first pools every annotator's judgements of the same prompt and completions and
keeps, for each pair of completions, the direction most of them chose (even votes drop the pair). Thumbs
stay one record per vote: the pointwise loss over repeated votes of one reply learns their share; implicit
signals stay their weighted pairs, outside the vote.

:func:`training_rows` is the ``rewardserve.data_sources`` entry point: ``rewardmodel.sources`` calls it for
``sqlite://`` and ``postgresql://`` sources, so training reads the store with the same filters as export,
given as URL query parameters (``?since=…&until=…&source=…&annotator=…&aggregate=majority``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import make_url

from feedback.errors import InvalidFeedback
from feedback.events import FeedbackEvent, item_key
from feedback.judgements import IMPLICIT
from feedback.store import EVERYTHING, FeedbackStore, Filters, StoredEvent, database_url, redact
from rewardmodel.records import ranking_groups

Aggregate = Literal["all", "majority"]
FILTER_PARAMS = ("since", "until", "source", "annotator", "aggregate")


@dataclass
class ExportReport:
    """What an export read and wrote."""

    events: int = 0
    records: int = 0
    by_form: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``skipped`` says why events gave no record."""
        return {"events": self.events, "records": self.records, "by_form": dict(self.by_form),
                "skipped": dict(self.skipped)}


def training_records(events: Iterable[StoredEvent], aggregate: Aggregate = "all",
                     report: ExportReport | None = None,
                     weights: Mapping[str, float] | None = None) -> Iterator[dict[str, Any]]:
    """Preference records for ``events``, in the forms training reads; ``report`` counts what was skipped;
    ``weights`` overrides implicit forms' pair weights (form → weight; 0 leaves the form out)."""
    report = report if report is not None else ExportReport()
    if weights:
        events = _weighted(events, weights, report)
    if aggregate == "majority":
        yield from _majority(events, report, weights)
        return
    for stored in events:
        e = stored.event
        report.events += 1
        report.by_form[e.form] += 1
        for record in _records(e, report, weights):
            report.records += 1
            yield record


def implicit_weights(given: Iterable[str]) -> dict[str, float]:
    """``FORM=W`` settings (the ``--implicit-weight`` flag) as a map; an unknown form or a weight outside [0, 1]
    is refused."""
    out = {}
    for item in given:
        form, _, value = item.partition("=")
        if form not in IMPLICIT:
            raise InvalidFeedback(f"--implicit-weight {item!r}: the implicit forms are {', '.join(IMPLICIT)}")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not 0 <= weight <= 1:
            raise InvalidFeedback(f"--implicit-weight {item!r}: give FORM=W with W in [0, 1] (0 leaves the form out)")
        out[form] = weight
    return out


def _weighted(events: Iterable[StoredEvent], weights: Mapping[str, float],
              report: ExportReport) -> Iterator[StoredEvent]:
    """``events`` without the forms weighted 0 (counted as skipped); the others' weights are set in
    :func:`_records`."""
    for stored in events:
        if weights.get(stored.event.form, 1.0) == 0:
            report.skipped[f"{stored.event.form} weighted 0"] += 1
            continue
        yield stored


def _records(e: FeedbackEvent, report: ExportReport,
             weights: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    records, why_none = e.judgement.records(e)
    if why_none is not None:
        report.skipped[why_none] += 1
    if weights and e.form in weights:
        records = [r | {"weight": weights[e.form]} for r in records]
    return records


def _majority(events: Iterable[StoredEvent], report: ExportReport,
              weights: Mapping[str, float] | None) -> Iterator[dict[str, Any]]:
    prompts: dict[str, Any] = {}
    votes: dict[str, Counter[tuple[str, str]]] = {}
    for stored in events:
        e = stored.event
        report.events += 1
        report.by_form[e.form] += 1
        if e.form == "thumbs" or e.form in IMPLICIT:  # votes of one reply; weak signals keep their weights
            for record in _records(e, report, weights):
                report.records += 1
                yield record
            continue
        key = item_key(e.prompt, e.completions)
        prompts.setdefault(key, e.prompt)
        tally = votes.setdefault(key, Counter())
        for better, worse in e.judgement.pairs():
            tally[(e.completions[better], e.completions[worse])] += 1
    for key, tally in votes.items():
        done: set[frozenset[str]] = set()
        for (a, b), n in tally.items():
            if frozenset((a, b)) in done:
                continue
            done.add(frozenset((a, b)))
            against = tally.get((b, a), 0)
            if n == against:
                report.skipped["pairs with even votes"] += 1
                continue
            chosen, rejected = (a, b) if n > against else (b, a)
            report.records += 1
            yield {"prompt": prompts[key], "chosen": chosen, "rejected": rejected,
                   "votes": {"for": max(n, against), "against": min(n, against)}}


def export(store: FeedbackStore, out: Path, filters: Filters = EVERYTHING,
           aggregate: Aggregate = "all", weights: Mapping[str, float] | None = None) -> ExportReport:
    """Write the training records of the matching events to ``out`` (.jsonl or .parquet); nothing is
    left half-written: the file appears whole or not at all."""
    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise InvalidFeedback(f"{out}: write .jsonl or .parquet")
    report = ExportReport()
    records = training_records(store.events(filters), aggregate, report, weights)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if suffix == ".jsonl":
            with partial.open("w", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            _write_parquet(list(records), partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return report


def _write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if any(isinstance(r["prompt"], list) for r in records) and any(isinstance(r["prompt"], str) for r in records):
        raise InvalidFeedback(f"{path.with_suffix('')}: the prompts mix strings and chat messages, which one "
                              "Parquet column cannot hold; export to .jsonl")
    chat = bool(records) and isinstance(records[0]["prompt"], list)
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([
        ("id", pa.string()), ("prompt", pa.list_(message) if chat else pa.string()),
        ("chosen", pa.string()), ("rejected", pa.string()), ("completions", pa.list_(pa.string())),
        # a ranking's every entry as a group, so one column type holds ties and single places alike
        ("ranking", pa.list_(pa.list_(pa.int64()))),
        ("weight", pa.float64()),
        ("completion", pa.string()), ("label", pa.bool_()), ("rating", pa.float64()), ("scale", pa.list_(pa.float64())),
        # criteria names vary by event: a map column holds any of them
        ("criteria", pa.map_(pa.string(), pa.float64())),
    ])
    rows = [{**r, "ranking": ranking_groups(r["ranking"], len(r["completions"]))} if "ranking" in r else r
            for r in records]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def parse_time(value: str | None, name: str) -> datetime | None:
    """An RFC 3339 / ISO 8601 time (a date alone means its midnight, UTC); None stays None."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidFeedback(f"{name}: {value!r} is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def source_filters(source: str) -> tuple[str, Filters, Aggregate]:
    """A data-source URL split into the database URL and the filters of its query string."""
    url = make_url(database_url(source))
    params: dict[str, str] = {k: str(v) for k, v in url.query.items() if k in FILTER_PARAMS}
    aggregate = params.get("aggregate", "all")
    if aggregate not in ("all", "majority"):
        raise InvalidFeedback(f"aggregate={aggregate!r}: use all or majority")
    filters = Filters(since=parse_time(params.get("since"), "since"), until=parse_time(params.get("until"), "until"),
                      source=params.get("source"), annotator=params.get("annotator"))
    plain = url.difference_update_query(FILTER_PARAMS).render_as_string(hide_password=False)
    return plain, filters, aggregate  # type: ignore[return-value]


def training_rows(source: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, record) for every training record of the store at ``source`` (the data-source entry point)."""
    url, filters, aggregate = source_filters(source)
    store = FeedbackStore(url, pool_size=1, must_exist=True)
    try:
        shown = redact(url)
        for i, record in enumerate(training_records(store.events(filters), aggregate)):
            yield f"{shown} record {i} (event {record.get('id', 'majority vote')})", record
    finally:
        store.close()
