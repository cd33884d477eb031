"""``POST /feedback`` and ``GET /feedback/stats`` on a real server: the answers, the keys, the metrics,
scoring untouched by a stuck database, and stored text kept out of the logs."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedback.store import FeedbackStore
from tests.feedback import events
from tests.server import error_of, running

ITEM = {"prompt": "how are you ?", "completion": " i am good ."}


def post(url: str, *rows: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(url + "/feedback", json={"events": list(rows)}, timeout=30, **kw)


def stored_ids(db: Path) -> list[str]:
    return [s.event.id for s in FeedbackStore(str(db), must_exist=True).events()]


def test_feedback_round_trip(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    with running(model=bert_onnx_bundle, feedback_db=str(db)) as live:
        scored = events.choice(1, scores=[2.0, -1.0, 0.5], reward_model="tiny", source="chat-ui")
        batch = [scored, events.ranking(1, annotator="ann"), events.ratings(1), events.thumbs(1)]
        r = post(live.url, *batch)
        assert r.status_code == 200 and r.json() == {"accepted": 4, "duplicates": 0}
        assert post(live.url, batch[0], events.choice(2)).json() == {"accepted": 1, "duplicates": 1}
        # the same id with other content: 409, and nothing of that batch is stored
        assert "choice-1" in error_of(post(live.url, events.choice(3), {**scored, "choice": 2}), 409, "conflict")
        # a malformed event: 422 naming its index and field, and nothing of that batch is stored
        message = error_of(post(live.url, events.choice(4), {**events.choice(5), "choice": 9}), 422,
                           "validation_error")
        assert "events.1" in message and "'choice'" in message
        error_of(httpx.post(live.url + "/feedback", json={"events": []}), 422, "validation_error")
        error_of(httpx.post(live.url + "/feedback", content=b"{", headers={"content-type": "application/json"}),
                 400, "invalid_json")
        assert stored_ids(db) == ["choice-1", "ranking-1", "ratings-1", "thumbs-1", "choice-2"]

        stats = httpx.get(live.url + "/feedback/stats").json()
        assert stats["events"] == 5 and stats["by_source"] == {"none": 4, "chat-ui": 1}
        assert stats["live_accuracy"] == {"tiny": {"pairs": 2, "accuracy": 1.0}}
        assert httpx.get(live.url + "/feedback/stats", params={"source": "chat-ui"}).json()["events"] == 1
        error_of(httpx.get(live.url + "/feedback/stats", params={"since": "yesterday"}), 422, "validation_error")

        assert live.metric("rewardserve_feedback_events_total", form="choice", source="chat-ui") == 1
        assert live.metric("rewardserve_feedback_events_total", form="choice", source="none") == 1
        assert live.metric("rewardserve_feedback_agreement_ratio", model="tiny") == 1.0
        assert live.metric("rewardserve_requests_total", endpoint="/feedback", code="409") == 1
        # the implicit forms of a chat UI: validated the same way, all or nothing, idempotent
        chat = [events.implicit(f, 9, source="chat-ui") for f in ("regenerate", "copy", "edit", "continue",
                                                                    "abandon")]
        bad = {**events.implicit("copy", 10), "copy": 7}
        assert "'copy'" in error_of(post(live.url, chat[0], bad), 422, "validation_error")
        assert post(live.url, *chat).json() == {"accepted": 5, "duplicates": 0}
        assert post(live.url, *chat).json() == {"accepted": 0, "duplicates": 5}
        assert live.metric("rewardserve_feedback_events_total", form="continue", source="chat-ui") == 1
        assert live.metric("rewardserve_rejected_total", reason="conflict") == 1
        assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200


def test_feedback_is_off_without_a_database(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle) as live:
        error_of(post(live.url, events.choice(1)), 404, "not_found")
        assert "/feedback" not in httpx.get(live.url + "/openapi.json").json()["paths"]


@pytest.mark.parametrize(("api", "feedback", "writes_with", "scores_with"), [
    ("score-key", "", "score-key", "score-key"),            # one set of keys guards both
    ("score-key", "fb-key", "fb-key", "score-key"),         # separate keys: neither opens the other's door
    ("", "fb-key", "fb-key", None),                         # feedback guarded, scoring open
])
def test_keys_for_scoring_and_for_feedback(bert_onnx_bundle: Path, tmp_path: Path, api: str, feedback: str,
                                           writes_with: str, scores_with: str | None) -> None:
    bearer = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    with running(model=bert_onnx_bundle, feedback_db=str(tmp_path / "f.db"), api_keys=api,
                 feedback_keys=feedback) as live:
        error_of(post(live.url, events.choice(1)), 401, "unauthorized")
        error_of(httpx.get(live.url + "/feedback/stats"), 401, "unauthorized")
        assert post(live.url, events.choice(1), headers=bearer(writes_with)).status_code == 200
        assert httpx.get(live.url + "/feedback/stats", headers=bearer(writes_with)).status_code == 200
        score = lambda **kw: httpx.post(live.url + "/score", json={"items": [ITEM]}, **kw)  # noqa: E731
        if scores_with is None:
            assert score().status_code == 200
        else:
            assert score(headers=bearer(scores_with)).status_code == 200
        if writes_with != scores_with and scores_with is not None:
            error_of(score(headers=bearer(writes_with)), 401, "unauthorized")
            error_of(post(live.url, events.choice(2), headers=bearer(scores_with)), 401, "unauthorized")


def test_scoring_never_waits_on_a_stuck_database(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    with running(model=bert_onnx_bundle, feedback_db=str(db)) as live:
        assert post(live.url, events.choice(1)).status_code == 200
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another writer holds the database past the busy timeout
        answers: list[httpx.Response] = []
        writer = threading.Thread(target=lambda: answers.append(post(live.url, events.choice(2))))
        try:
            writer.start()
            for _ in range(5):
                assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200
            assert writer.is_alive(), "scoring answered while the feedback write was still waiting"
            writer.join(30)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert "locked" in error_of(answers[0], 503, "feedback_unavailable")
        assert answers[0].headers["retry-after"] == "2"
        assert post(live.url, events.choice(2)).json() == {"accepted": 1, "duplicates": 0}  # the retry lands


def test_stored_text_never_reaches_the_logs(bert_onnx_bundle: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    secret = "SECRET-PROMPT-4242"
    caplog.set_level(logging.DEBUG)
    with running(model=bert_onnx_bundle, feedback_db=str(tmp_path / "f.db"), log_level="debug") as live:
        stored = {**events.choice(1), "prompt": secret, "completions": [secret + " a", secret + " b"]}
        assert post(live.url, stored).status_code == 200
        post(live.url, {**stored, "choice": 1})                   # 409
        post(live.url, {**stored, "id": "x", "choice": 5})        # 422
        httpx.get(live.url + "/feedback/stats")
    assert caplog.records, "the server logged nothing at debug level: the check would prove nothing"
    assert secret not in caplog.text
