"""``/feedback`` and ``/label/*`` fuzzed at the boundaries on purpose, not only by random cases: extreme dates
and offsets, huge integers and floats, deep JSON, invalid UTF-8, lone surrogates and NUL in text. Every answer
is a 4xx in the error shape (or a 200 where the input is valid), on SQLite and on PostgreSQL, and the server
scores and stores as before afterwards."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.feedback import events
from tests.server import error_of, running

TEAM = {"Authorization": "Bearer team-key"}
ALICE = {"Authorization": "Bearer alice-key"}
KEYS: dict[str, Any] = {"annotator_keys": ("alice:alice-key",), "feedback_keys": ("team-key",)}
JSON = {"content-type": "application/json"}

OUT_OF_RANGE = ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "0001-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00", "3000-01-01T00:00:00Z",
                -1, 32503680000000]
"""``created_at`` values outside 1970-01-01 .. 3000-01-01 UTC, as text with offsets and as epoch seconds (and
milliseconds, as pydantic reads numbers past 2e10)."""
IN_RANGE = ["1970-01-01T00:00:00Z", "1970-01-01T23:59:00+23:59", "2999-12-31T23:59:59.999999Z",
            "2999-12-31T00:00:01-23:59", "2026-12-07T04:55:00.123+05:30"]
MALFORMED_TIMES: list[Any] = ["2026-12-07T04:55:00", "2026-12-07T04:55:00+24:00", "2026-02-30T00:00:00Z",
                              "10000-01-01T00:00:00Z", "", "now", None, [], {}, True, 2**63, 10**30, 1e300]
"""Values that are no date/time of Python's calendar at all (pydantic's own message names the field)."""


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


BAD_BODIES: list[tuple[str, bytes]] = [
    ("invalid UTF-8", b'{"events": [{"id": "\xff\xfe", "prompt": "q", "completions": ["a"], "ratings": [1]}]}'),
    ("truncated UTF-8", '{"events": [{"id": "é'.encode()[:-1]),
    ("deep JSON", ('{"events": [{"id": "d", "prompt": "q", "completions": ["a"], "ratings": [1], "metadata": {"x": '
                   + deep(100_000) + "}}]}").encode()),
    ("deep JSON as the body", deep(200_000).encode()),
    ("an integer of 5,000 digits", b'{"events": [{"id": "big", "prompt": "q", "completions": ["a", "b"], "choice": '
                                   + b"9" * 5000 + b"}]}"),
    ("NaN", b'{"events": [{"id": "nan", "prompt": "q", "completions": ["a"], "ratings": [NaN]}]}'),
    ("a BOM", b'\xef\xbb\xbf{"events": []}'),
    ("UTF-16", '{"events": []}'.encode("utf-16")),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, bert_onnx_bundle: Any, tmp_path: Any) -> Any:
    url = str(tmp_path / "feedback.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with running(model=bert_onnx_bundle, feedback_db=url, **KEYS) as server:
        yield server


def post(url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """``body`` as ASCII JSON: a lone surrogate goes as its ``\\ud800`` escape, valid JSON that no UTF-8 holds."""
    return httpx.post(url, content=json.dumps(body).encode(), headers={**JSON, **headers}, timeout=30)


def feedback(url: str, **fields: Any) -> httpx.Response:
    return post(url + "/feedback", {"events": [{**events.choice(0), **fields}]}, TEAM)


def test_dates_outside_the_range_are_422_naming_the_field_and_the_range(live: Any) -> None:
    for moment in OUT_OF_RANGE:
        message = error_of(feedback(live.url, created_at=moment), 422, "validation_error")
        assert "created_at" in message and "1970-01-01" in message and "3000-01-01" in message, (moment, message)
        for param in ("since", "until"):
            r = httpx.get(live.url + "/feedback/stats", params={param: str(moment)}, headers=TEAM)
            assert param in error_of(r, 422, "validation_error")
    for moment in MALFORMED_TIMES:
        if moment is not None:
            assert "created_at" in error_of(feedback(live.url, created_at=moment), 422, "validation_error"), moment
    for i, moment in enumerate(IN_RANGE):
        r = feedback(live.url, id=f"in-range-{i}", created_at=moment)
        assert r.json() == {"accepted": 1, "duplicates": 0}, (moment, r.text)
    stats = httpx.get(live.url + "/feedback/stats", params={"since": "1970-01-01T00:00:00Z",
                                                           "until": "2999-12-31T23:59:59+00:00"}, headers=TEAM)
    assert stats.json()["events"] == len(IN_RANGE) - 1  # all but the one at 23:59:59.999999


def test_huge_numbers_and_odd_text_are_4xx_or_stored_intact(live: Any) -> None:
    for fields in ({"choice": 2**64}, {"choice": -(2**63)}, {"choice": 1e300},
                   {"ratings": [2**70, 1, 1], "scale": [1, 5]}, {"scores": [1e308, 2**1000, 0.0]}):
        r = feedback(live.url, **fields)
        assert 400 <= r.status_code < 500, (fields, r.status_code, r.text)
        error_of(r, r.status_code, r.json()["error"]["type"])
    # metadata is free JSON: a big integer in it is kept exactly, on either store
    assert feedback(live.url, id="big-metadata", metadata={"n": 2**4000}).status_code == 200
    for name, body in BAD_BODIES:
        r = httpx.post(live.url + "/feedback", content=body, headers={**JSON, **TEAM}, timeout=30)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
        error_of(r, r.status_code, r.json()["error"]["type"])
    # a lone surrogate is valid JSON but no Unicode text: refused, naming where it is
    for field, value in (("prompt", "lone \ud800 surrogate"), ("completions", ["a", "\udc00"]),
                         ("metadata", {"\ud800": 1})):
        message = error_of(feedback(live.url, id="surrogate", **{field: value}), 400, "invalid_json")
        assert f"body.events.0.{field}" in message and "surrogate" in message
    # NUL (PostgreSQL's text holds none) and emoji, sent escaped as surrogate pairs, are stored intact
    for i, text in enumerate(["nul \x00 inside", "\U0001f600 " * 1000]):
        r = feedback(live.url, id=f"text-{i}", prompt=text)
        assert r.json() == {"accepted": 1, "duplicates": 0}, (text[:20], r.status_code, r.text)
    assert feedback(live.url, id="after").json() == {"accepted": 1, "duplicates": 0}


def test_the_labeling_endpoints_take_boundary_values_with_4xx(live: Any) -> None:
    task = {"prompt": "q ?", "completions": ["a", "b"]}
    for tasks in ([{**task, "priority": 2**2000}], [{**task, "completions": ["a\x00", "b"]}],
                  [{**task, "prompt": [{"role": "user", "content": 2**70}]}], [{**task, "source": "x" * 10_000}]):
        r = post(live.url + "/label/tasks", {"tasks": tasks}, TEAM)
        assert r.status_code in (200, 422), (tasks, r.status_code, r.text)
    r = post(live.url + "/label/tasks", {"tasks": [{**task, "prompt": "\ud800"}]}, TEAM)
    assert "body.tasks.0.prompt" in error_of(r, 400, "invalid_json")
    infinite = b'{"tasks": [{"prompt": "q", "completions": ["a", "b"], "priority": 1e309}]}'
    r = httpx.post(live.url + "/label/tasks", content=infinite, headers={**JSON, **TEAM})
    assert "priority" in error_of(r, 422, "validation_error")
    for name, body in BAD_BODIES:
        for path, headers in (("/label/tasks", TEAM), ("/label/submit", ALICE)):
            r = httpx.post(live.url + path, content=body, headers={**JSON, **headers}, timeout=30)
            assert 400 <= r.status_code < 500, (name, path, r.status_code, r.text[:300])
            error_of(r, r.status_code, r.json()["error"]["type"])
    assert httpx.post(live.url + "/label/tasks", json={"tasks": [task]}, headers=TEAM).json()["queued"] == 1
    task_id = httpx.get(live.url + "/label/next", headers=ALICE).json()["task"]["id"]
    for judgement in ({"choice": 2**64}, {"choice": -1}, {"ranking": json.loads(deep(50))}, {"ranking": [0, 2**70]},
                      {"ratings": [1e308, 1]}, {"ratings": [1, 1], "scale": [1e308, -1e308]}, {"task_id": "\ud800"},
                      {"task_id": "x" * 100_000}, {"task_id": "nul\x00"}, {"task_id": ""}):
        r = post(live.url + "/label/submit", {"task_id": task_id, **judgement}, ALICE)
        assert 400 <= r.status_code < 500, (judgement, r.status_code, r.text[:300])
        error_of(r, r.status_code, r.json()["error"]["type"])
    for skip in (["%ff"], ["x"] * 101, ["y" * 60_000]):
        r = httpx.get(live.url + "/label/next", params={"skip": skip}, headers=ALICE, timeout=30)
        assert r.status_code in (200, 414, 422, 431), (skip[:2], r.status_code, r.text[:300])
    for raw in ("%ff%fe", "%ED%A0%80", "%00", "%"):  # invalid UTF-8, an encoded surrogate, NUL, a bare escape
        r = httpx.get(f"{live.url}/label/next?skip={raw}", headers=ALICE, timeout=30)
        assert r.status_code == 422 and "skip" in error_of(r, 422, "validation_error"), (raw, r.text[:300])
    r = httpx.post(live.url + "/label/submit", json={"task_id": task_id, "choice": 1}, headers=ALICE)
    assert r.status_code == 200, r.text
    assert httpx.post(live.url + "/score", json={"items": [{"prompt": "q ?", "completion": "a"}]}).status_code == 200
