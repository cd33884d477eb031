"""Argilla: its record exports in (ranking and label questions), one event per submitted response.

``rewardserve feedback import --from argilla FILE`` reads the three shapes Argilla writes:

- Argilla 2's ``dataset.records.to_json``: ``{"id", "fields": {...}, "responses": {"<question>": [{"value",
  "user_id", "status"}]}}``;
- Argilla 1's FeedbackDataset records: ``{"external_id", "fields", "responses": [{"user_id", "status",
  "values": {"<question>": {"value"}}}]}``;
- the flat rows of ``to_list(flatten=True)``, ``to_datasets`` and the Hub: the fields as columns, and
  ``<question>.responses``, ``<question>.responses.users``, ``<question>.responses.status``.

A **ranking** question's value orders field names best first: a list of names (Argilla 2) or of
``{"value", "rank"}`` (Argilla 1 and the API; equal ranks tie). Its completions are the ranked fields, in
the record's field order (or ``--completion-fields``). A **label** question whose value names one of
``--completion-fields`` is a choice; any other label (a "tie", "both bad") is skipped and counted. Only
submitted responses count: drafts and discarded ones are skipped. ``--question`` picks the question;
without it, the one question whose responses are rankings. The event id is
``argilla:<record id>:<question>:<user id>``; the annotator is the user id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from feedback.errors import InvalidFeedback
from feedback.interop import Imported, event_id, parse_moment, prompt_of, read_records

TOOL = "argilla"
Response = tuple[str, Any, str | None, str | None]
"""(question, value, user id, status) of one answer."""


def read_argilla(path: Path, prompt_field: str | None = None, question: str | None = None,
                 completion_fields: Sequence[str] = ()) -> Imported:
    """The events of an Argilla records export (see the module docstring)."""
    imported = Imported(TOOL)
    records = read_records(path)
    shaped = [(n, r, *_shape(r)) for n, r in enumerate(records)]
    question = question or _ranking_question([resp for *_, resps in shaped for resp in resps], path)
    for n, record, record_id, fields, responses in shaped:
        imported.records += 1
        where = f"{path} record {record_id if record_id is not None else f'#{n}'}"
        mine = [r for r in responses if r[0] == question]
        if not mine:
            imported.skipped["record without a response to the question"] += 1
            continue
        prompt = prompt_of(fields, prompt_field, where)
        for _, value, user, status in mine:
            if status not in (None, "submitted"):
                imported.skipped[f"{status} response"] += 1
                continue
            common = {"id": event_id(TOOL, record_id if record_id is not None else n, question, user),
                      "prompt": prompt, "annotator": user,
                      "created_at": parse_moment(record.get("updated_at") or record.get("inserted_at"))}
            _response(imported, value, fields, completion_fields, common, f"{where} user {user}")
    return imported


def _response(imported: Imported, value: Any, fields: Mapping[str, Any], completion_fields: Sequence[str],
              common: dict[str, Any], where: str) -> None:
    if isinstance(value, list):
        groups = _rank_groups(value, where)
        ranked = {name for group in groups for name in group}
        # the record's own field order, so every annotator's event lists the completions alike
        names = list(completion_fields) or [name for name in fields if name in ranked] + sorted(ranked - set(fields))
        missing = [n for n in names if not isinstance(fields.get(n), str)]
        unknown = [n for g in groups for n in g if n not in names]
        if missing or unknown or len(names) < 2:
            raise InvalidFeedback(f"{where}: the ranking names fields {', '.join(missing or unknown) or names} that "
                                  f"are not text fields of the record (its fields: {', '.join(sorted(fields))})")
        placed = [n for g in groups for n in g]
        groups += [[n for n in names if n not in placed]] if len(placed) < len(names) else []
        ranking = [[names.index(n) for n in g] for g in groups]
        if len(ranking) < 2:
            imported.skipped["ranking with every field tied"] += 1
            return
        imported.add(where, completions=[fields[n] for n in names],
                     ranking=[g[0] if len(g) == 1 else g for g in ranking], **common)
    elif isinstance(value, str) and value in completion_fields:
        if not all(isinstance(fields.get(n), str) for n in completion_fields):
            raise InvalidFeedback(f"{where}: --completion-fields {','.join(completion_fields)} are not all text "
                                  f"fields of the record (its fields: {', '.join(sorted(fields))})")
        imported.add(where, completions=[fields[n] for n in completion_fields],
                     choice=list(completion_fields).index(value), **common)
    elif isinstance(value, str) and not completion_fields:
        raise InvalidFeedback(f"{where}: a label question's answer {value!r} is a choice only when it names one of "
                              "--completion-fields (e.g. --completion-fields response_1,response_2)")
    else:
        imported.skipped["answer that names no completion"] += 1


def _rank_groups(value: list[Any], where: str) -> list[list[str]]:
    """Field names grouped by rank, best first: a list of names, or of {"value", "rank"} (ties share a rank)."""
    if all(isinstance(v, str) for v in value):
        return [[v] for v in value]
    if all(isinstance(v, Mapping) and isinstance(v.get("value"), str) for v in value):
        ranked = [v for v in value if isinstance(v.get("rank"), int)]
        by_rank: dict[int, list[str]] = {}
        for v in sorted(ranked, key=lambda v: v["rank"]):
            by_rank.setdefault(v["rank"], []).append(v["value"])
        return list(by_rank.values())
    raise InvalidFeedback(f"{where}: a ranking answer must list field names, or objects with 'value' and 'rank'")


def _shape(record: Mapping[str, Any]) -> tuple[Any, Mapping[str, Any], list[Response]]:
    """(record id, fields, responses) of any of the three shapes."""
    if isinstance(record.get("fields"), Mapping):
        record_id = record.get("id", record.get("external_id"))
        return record_id, record["fields"], list(_nested(record.get("responses")))
    suffix = ".responses"
    questions = [k[:-len(suffix)] for k in record if k.endswith(suffix)]
    fields = {k: v for k, v in record.items() if not any(k.startswith(q + ".") for q in questions)}
    responses: list[Response] = []
    for q in questions:
        values = record.get(q + suffix) or []
        users = record.get(q + suffix + ".users") or [None] * len(values)
        statuses = record.get(q + suffix + ".status") or [None] * len(values)
        responses += [(q, v, _user(u), s) for v, u, s in zip(values, users, statuses, strict=False)]
    return record.get("id", record.get("external_id")), fields, responses


def _nested(responses: Any) -> Iterator[Response]:
    if isinstance(responses, Mapping):  # Argilla 2: question -> answers
        for q, answers in responses.items():
            for a in answers or []:
                yield q, a.get("value"), _user(a.get("user_id")), a.get("status")
    elif isinstance(responses, list):  # Argilla 1: one entry per user with all their answers
        for r in responses:
            for q, v in (r.get("values") or {}).items():
                yield q, (v or {}).get("value"), _user(r.get("user_id")), r.get("status")


def _user(user: Any) -> str | None:
    return None if user is None else str(user)


def _ranking_question(responses: list[Response], path: Path) -> str:
    questions = sorted({q for q, v, _, _ in responses if isinstance(v, list)})
    if len(questions) != 1:
        found = ", ".join(sorted({q for q, *_ in responses})) or "none"
        raise InvalidFeedback(f"{path}: say which question holds the judgements with --question (questions "
                              f"answered: {found}; ranking questions: {', '.join(questions) or 'none'})")
    return questions[0]
