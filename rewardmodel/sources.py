"""Reading preference data from JSONL, JSON, Parquet, `datasets` directories, the hub, the demo set, or a
database URL (the feedback store: ``sqlite:///feedback.db``, ``postgresql://…``).

Every row is parsed by :func:`rewardmodel.records.parse_record`, so a malformed row fails with an error
that names the file, the line (or row index) and the field. Training, ``rewardserve eval`` and the
export parity check all read data through here. ``pyarrow`` and ``datasets`` are imported only for
their formats.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rewardmodel.errors import DataError
from rewardmodel.records import PreferenceExample, merge_pointwise, parse_record

DATA_SOURCES = "rewardserve.data_sources"
"""Entry-point group of readers for URL sources, by scheme (``sqlite``, ``postgresql``, …)."""
DEMO_DATA = "builtin:demo"
"""Source name of the generated demo set; ``builtin:demo:heldout`` is its held-out split."""
DEMO_CRITERIA = "builtin:demo-criteria"
"""The demo set as per-criterion rankings (``…:heldout`` too), for a criteria model."""


def load_examples(source: str, split: str = "train", limit: int = 0) -> list[PreferenceExample]:
    """Load and parse all records of ``source`` (see :class:`~training.config.TrainConfig.train_data`)."""
    examples = []
    for where, row in _rows(source, split):
        examples.append(parse_record(row, where))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise DataError(source, "no preference records found")
    return merge_pointwise(examples)


def _rows(source: str, split: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if "://" in source:
        yield from _url_rows(source)
        return
    if source.startswith(DEMO_DATA):
        from rewardmodel.demo_data import demo_criteria_rows, demo_rows

        criteria = source.startswith(DEMO_CRITERIA)
        which = source[len(DEMO_CRITERIA if criteria else DEMO_DATA):].lstrip(":") or "train"
        if which not in ("train", "heldout"):
            raise DataError(source, f"unknown demo split {which!r}: use {DEMO_DATA}, {DEMO_CRITERIA}, or either "
                                    "with :heldout")
        rows = demo_criteria_rows(which) if criteria else demo_rows(which)
        yield from ((f"{source}#{i}", row) for i, row in enumerate(rows))
        return
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            yield from _jsonl_rows(path)
        elif suffix == ".json":
            yield from _json_rows(path)
        elif suffix == ".parquet":
            yield from _parquet_rows(path)
        else:
            raise DataError(str(path), "unsupported file type; use .jsonl, .json or .parquet")
        return
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json", ".parquet"):
        raise DataError(source, "no such file")
    yield from _datasets_rows(source, split)


def _url_rows(source: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Rows from a reader registered for the URL's scheme (entry points ``rewardserve.data_sources``): the
    feedback store registers ``sqlite`` and ``postgresql``. This package imports no stage, so the store's
    reader is found by name, and its failures are translated here."""
    from importlib.metadata import entry_points

    scheme = source.split("://", 1)[0].lower()
    readers = {ep.name: ep for ep in entry_points(group=DATA_SOURCES)}
    if scheme not in readers:
        raise DataError(_redacted(source), f"no reader for {scheme}:// sources (known: "
                                           f"{', '.join(sorted(readers)) or 'none'}; the feedback store's readers "
                                           "need rewardserve[feedback] installed)")
    rows = readers[scheme].load()(source)
    while True:
        try:
            yield next(rows)
        except StopIteration:
            return
        except Exception as exc:  # the reader's own errors (a database down, a bad filter) name the source
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            raise DataError(_redacted(source), message) from exc


def _redacted(source: str) -> str:
    """``source`` without a password (``scheme://user:secret@host`` shows ``scheme://user:***@host``)."""
    scheme, _, rest = source.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return source.split("?", 1)[0]
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host.split('?', 1)[0]}"


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(where, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc


def _json_rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}", f"invalid JSON ({exc.msg})") from exc
    if not isinstance(data, list):
        raise DataError(str(path), "a .json data file must hold a list of records (use .jsonl for one per line)")
    yield from ((f"{path}[{i}]", row) for i, row in enumerate(data))


def _parquet_rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    # a map column (the feedback export's criteria) as the object it was, not a list of (key, value)
    yield from ((f"{path} row {i}", row) for i, row in enumerate(table.to_pylist(maps_as_pydicts="strict")))


def _datasets_rows(source: str, split: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    import datasets

    try:
        if Path(source).is_dir():
            loaded = datasets.load_from_disk(source)
        else:
            loaded = datasets.load_dataset(source, split=split)
    except FileNotFoundError as exc:
        raise DataError(source, f"cannot load dataset ({exc})") from exc
    except Exception as exc:  # datasets raises many types (hub, network, format); name the source in one error
        raise DataError(source, f"cannot load dataset: {type(exc).__name__}: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(source, f"has no split {split!r}; splits: {sorted(loaded)}")
        loaded = loaded[split]
    yield from ((f"{source}[{split}] row {i}", row) for i, row in enumerate(loaded))
