"""The labeling queue and page against a real server and a real SQLite store: tasks pushed by a team,
handed to N different annotators, judged with the keyboard in a real browser (Debian's chromium, driven
by Playwright) with every request outside the server refused, and stored as ranking events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from feedback.store import FeedbackStore
from tests.helpers import require_module, require_tool
from tests.server import error_of, running

TEAM = {"Authorization": "Bearer team-key"}
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
KEYS: dict[str, Any] = {"annotator_keys": ("alice:alice-key", "bob:bob-key", "carol:carol-key"),
                        "feedback_keys": ("team-key",)}
TASK = {"prompt": [{"role": "user", "content": "How do I boil an egg?"}],
        "completions": ["Put it in boiling water for 8 minutes.", "Eggs are laid by hens.", "Microwave it whole."]}


def stored(db: Path) -> list[dict[str, Any]]:
    store = FeedbackStore(str(db), pool_size=1, must_exist=True)
    try:
        return [s.event.model_dump(exclude_none=True) for s in store.events()]
    finally:
        store.close()


def test_tasks_go_to_n_different_annotators_highest_priority_first(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    low = {**TASK, "completions": ["a", "b"], "priority": -1.0}
    with running(model=bert_onnx_bundle, feedback_db=str(db), label_annotations=2, **KEYS) as live:
        r = httpx.post(live.url + "/label/tasks", json={"tasks": [low, TASK, TASK]}, headers=TEAM)
        assert r.json() == {"queued": 2, "duplicates": 1}, r.text
        error_of(httpx.post(live.url + "/label/tasks", json={"tasks": [TASK]}, headers=ALICE), 401, "unauthorized")
        first = httpx.get(live.url + "/label/next", headers=ALICE).json()
        assert first["annotator"] == "alice" and first["judged"] == 0
        assert first["task"]["completions"] == TASK["completions"]  # priority 0 before -1
        task_id = first["task"]["id"]
        skipped = httpx.get(live.url + "/label/next", params={"skip": task_id}, headers=ALICE).json()
        assert skipped["task"]["completions"] == ["a", "b"]
        r = httpx.post(live.url + "/label/submit", json={"task_id": task_id, "ranking": [0, [1, 2]]}, headers=ALICE)
        assert r.status_code == 200 and r.json()["judged"] == 1, r.text
        again = httpx.post(live.url + "/label/submit", json={"task_id": task_id, "ranking": [0, [1, 2]]},
                           headers=ALICE)
        assert again.json()["judged"] == 1  # a resubmission is a duplicate, not a second vote
        assert httpx.get(live.url + "/label/next", headers=ALICE).json()["task"]["completions"] == ["a", "b"]
        assert httpx.get(live.url + "/label/next", headers=BOB).json()["task"]["id"] == task_id  # 2nd annotator
        httpx.post(live.url + "/label/submit", json={"task_id": task_id, "choice": 0}, headers=BOB)
        carol = httpx.get(live.url + "/label/next", headers={"Authorization": "Bearer carol-key"}).json()
        assert carol["task"]["completions"] == ["a", "b"]  # judged twice already: no third annotator
        message = error_of(httpx.post(live.url + "/label/submit", json={"task_id": task_id, "ranking": [0, 0, 1]},
                                      headers=BOB), 422, "validation_error")
        assert "ranking" in message
        error_of(httpx.post(live.url + "/label/submit", json={"task_id": "nope", "choice": 0}, headers=BOB), 404,
                 "unknown_task")
        error_of(httpx.get(live.url + "/label/next", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    events = {e["annotator"]: e for e in stored(db)}
    assert events["alice"]["ranking"] == [0, [1, 2]] and events["alice"]["source"] == "labeling"
    assert events["bob"]["choice"] == 0 and events["bob"]["prompt"] == TASK["prompt"]
    with running(model=bert_onnx_bundle, feedback_db=str(tmp_path / "other.db")) as live:  # no annotator keys
        error_of(httpx.get(live.url + "/label/next", headers=ALICE), 403, "forbidden")


@pytest.fixture
def browser() -> Any:
    chromium = require_tool("chromium", "chromium-browser")
    sync_api = require_module("playwright.sync_api", "pip install -e '.[dev]'")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


def test_an_annotator_ranks_with_the_keyboard_and_the_store_holds_the_ranking(
        bert_onnx_bundle: Path, tmp_path: Path, browser: Any) -> None:
    db = tmp_path / "feedback.db"
    with running(model=bert_onnx_bundle, feedback_db=str(db), **KEYS) as live:
        assert httpx.post(live.url + "/label/tasks", json={"tasks": [TASK]}, headers=TEAM).status_code == 200
        outside: list[str] = []

        def only_the_server(route: Any) -> None:
            if route.request.url.startswith(live.url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        seen = {}
        for name in ("alice", "bob"):  # the second annotator gets the same task
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(live.url + "/label")
            page.fill("#key", f"{name}-key")
            page.keyboard.press("Enter")  # submits the login form
            page.wait_for_selector(".completion")
            seen[name] = page.locator(".completion").all_inner_texts()
            assert "User: How do I boil an egg?" in page.locator("#prompt").inner_text()
            for key, ranked in (("2", 1), ("3", 2), ("Backspace", 1), ("3", 2), ("1", 3)):  # keyboard only
                page.keyboard.press(key)
                assert page.locator(".completion.ranked").count() == ranked, key
            assert page.locator(".completion .rank").all_inner_texts() == ["#3", "#1", "#2"]
            page.keyboard.press("Enter")
            page.wait_for_selector("text=Nothing to judge right now.")
            assert f"{name} · judged 1" in page.locator("#me").inner_text()
            assert page.evaluate("sessionStorage.length") == 1
            if name == "alice":
                page.screenshot(path=str(tmp_path / "label.png"))
            page.close()
        assert seen["alice"] == seen["bob"]
    assert outside == [], f"the page asked for something outside the server: {outside}"
    rankings = {e["annotator"]: e["ranking"] for e in stored(db)}
    assert rankings == {"alice": [1, 2, 0], "bob": [1, 2, 0]}


def test_live_reranks_are_queued_least_certain_first_within_the_hourly_cap(bert_onnx_bundle: Path,
                                                                            tmp_path: Path) -> None:
    from tests.service.test_http import offline

    clear = ("how are you ?", [" i am good .", " i am bad ."])  # the model tells these apart
    close = ("the sun", [" i am good .", " i am fine ."])  # two good replies: a near tie
    margins = {p: abs(float(np.diff(offline(bert_onnx_bundle, [(p, c) for c in cs]))[0])) for p, cs in (clear, close)}
    assert margins["the sun"] < margins["how are you ?"]
    settings: dict[str, Any] = dict(model=bert_onnx_bundle, feedback_db=str(tmp_path / "f.db"),
                                    collect_for_labeling=True, collect_rate=1.0, collect_per_hour=3, **KEYS)
    with running(**settings) as live:
        for prompt, completions in (clear, close):
            assert httpx.post(live.url + "/rerank", json={"prompt": prompt, "completions": completions}
                              ).status_code == 200
        # a /score request with two completions of one prompt is offered too; one completion alone is not
        httpx.post(live.url + "/score", json={"items": [{"prompt": "hello", "completion": " world"},
                                                         {"prompt": "hello", "completion": " rain"},
                                                         {"prompt": "alone", "completion": " one"}]})
        httpx.post(live.url + "/rerank", json={"prompt": "over the cap", "completions": ["a", "b"]})
        order: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(order) < 3 and time.monotonic() < deadline:
            task = httpx.get(live.url + "/label/next", params={"skip": [t["id"] for t in order]},
                             headers=ALICE).json()["task"]
            if task is None:
                time.sleep(0.05)  # queueing runs in the background, after the answer
                continue
            order.append(task)
        prompts = [t["prompt"] for t in order]
        assert sorted(prompts) == ["hello", "how are you ?", "the sun"]  # the 4th was over the cap of 3
        assert prompts.index("the sun") < prompts.index("how are you ?")  # the near tie comes first
        assert all(t["source"] == "live" for t in order)
    with pytest.raises(ValueError, match="feedback_db"):
        running(model=bert_onnx_bundle, collect_for_labeling=True).__enter__()
