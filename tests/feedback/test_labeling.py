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
TASK: dict[str, Any] = {"prompt": [{"role": "user", "content": "How do I boil an egg?"}],
        "completions": ["Put it in boiling water for 8 minutes.", "Eggs are laid by hens.", "Microwave it whole."]}


def shown_keys(page: Any) -> list[str]:
    """The replies' numbers, top to bottom."""
    return [t.strip() for t in page.locator(".completion .key").all_inner_texts()]


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
        both = error_of(httpx.post(live.url + "/label/submit", json={"task_id": task_id, "choice": 0,
                                                                      "ratings": [1, None, None]}, headers=BOB),
                        422, "validation_error")
        assert "exactly one of 'ranking', 'choice' or 'ratings'" in both
        # alice and bob agree on both pairs they share (0 over 1, 0 over 2)
        assert httpx.get(live.url + "/label/next", headers=ALICE).json()["agreement"] == {
            "items": 1, "comparisons": 2, "ratio": 1.0}
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
            seen[name] = page.locator(".completion .text").all_inner_texts()
            assert "User: How do I boil an egg?" in page.locator("#prompt").inner_text()
            for key, ranked in (("2", 1), ("3", 2), ("Backspace", 1), ("3", 2), ("1", 3)):  # keyboard only
                page.keyboard.press(key)
                assert page.locator(".completion.ranked").count() == ranked, key
            # the replies are shown in the order given, each keeping its number
            assert shown_keys(page) == ["2.", "3.", "1."]
            assert page.locator(".completion .rank").all_inner_texts() == ["#1", "#2", "#3"]
            page.keyboard.press("Enter")
            page.wait_for_selector("text=Nothing to judge right now.")
            # bob judged what alice did, alike: 3 pairs of replies compared, all agreed
            agreement = "agreement: no shared items yet" if name == "alice" else "agreement 100% (3 comparisons)"
            assert page.locator("#me").inner_text() == f"{name} · judged 1 · {agreement}"
            assert page.evaluate("sessionStorage.length") == 1
            if name == "alice":
                page.screenshot(path=str(tmp_path / "label.png"))
            page.close()
        assert seen["alice"] == seen["bob"] == TASK["completions"]
    assert outside == [], f"the page asked for something outside the server: {outside}"
    rankings = {e["annotator"]: e["ranking"] for e in stored(db)}
    assert rankings == {"alice": [1, 2, 0], "bob": [1, 2, 0]}


def test_live_reranks_are_queued_least_certain_first_within_the_hourly_cap(bert_onnx_bundle: Path,
                                                                            tmp_path: Path) -> None:
    from tests.references import offline

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


# a slow network for the page's task fetches: the next task arrives 400 ms after the server sent it
SLOW_NEXT = """
const fetched = window.fetch.bind(window);
window.fetch = async (url, init) => {
  const response = await fetched(url, init);
  if (String(url).includes("/label/next")) await new Promise((done) => setTimeout(done, 400));
  return response;
};
"""


def open_page(browser: Any, url: str, key: str, init_script: str | None = None) -> Any:
    """The labeling page, logged in with ``key``, showing its first task."""
    page = browser.new_page()
    if init_script:
        page.add_init_script(init_script)
    page.goto(url + "/label")
    page.fill("#key", key)
    page.keyboard.press("Enter")
    page.wait_for_selector(".completion")
    return page


def submitted(page: Any, expect: str) -> None:
    page.keyboard.press("Enter")
    page.wait_for_selector(f"text={expect}")


def test_drag_tie_and_thumbs(bert_onnx_bundle: Path, tmp_path: Path, browser: Any) -> None:
    """Each way of judging on the page reaches the store as the event it means."""
    db = tmp_path / "feedback.db"
    tasks = [{**TASK, "priority": 2.0}, {**TASK, "completions": ["x", "y", "z"], "priority": 1.0},
             {**TASK, "completions": ["p", "q", "r"], "priority": 0.0}]
    with running(model=bert_onnx_bundle, feedback_db=str(db), label_annotations=1, **KEYS) as live:
        assert httpx.post(live.url + "/label/tasks", json={"tasks": tasks}, headers=TEAM).status_code == 200
        page = open_page(browser, live.url, "alice-key")
        assert page.locator("#me").inner_text() == "alice · judged 0 · agreement: no shared items yet"
        # drag: reply 3 dropped on reply 1 goes above it; the order shown becomes the ranking
        page.drag_and_drop(".completion[data-index='2']", ".completion[data-index='0']")
        assert shown_keys(page) == ["3.", "1.", "2."]
        page.drag_and_drop(".completion[data-index='1']", ".completion[data-index='0']")
        assert shown_keys(page) == ["3.", "2.", "1."]
        assert page.locator(".completion .rank").all_inner_texts() == ["#1", "#2", "#3"]
        submitted(page, "Saved your ranking.")
        # a tie: T joins the next pick to the previous one's place
        assert page.locator(".completion .text").all_inner_texts() == ["x", "y", "z"]
        for key in ("1", "t", "3"):
            page.keyboard.press(key)
        assert page.locator(".completion .rank").all_inner_texts() == ["#1 (tie)", "#1 (tie)", ""]
        submitted(page, "Saved your ranking.")
        # thumbs, keyboard only: focus a thumbs button and press Space; Space again takes the vote back
        page.focus("[aria-label='thumbs up 1']")
        page.keyboard.press("Space")
        page.keyboard.press("Space")
        page.keyboard.press("Space")
        assert page.locator("[aria-label='thumbs up 1']").get_attribute("aria-pressed") == "true"
        page.focus("[aria-label='thumbs down 3']")
        page.keyboard.press("Space")
        page.keyboard.press("Escape")  # leave the button: Enter submits again
        assert page.locator(".thumb[aria-pressed='true']").count() == 2
        submitted(page, "Nothing to judge right now.")
        assert page.locator("#status").inner_text() == "Nothing to judge right now."
        page.close()
    events = {tuple(e["completions"]): e for e in stored(db)}
    assert events[tuple(TASK["completions"])]["ranking"] == [2, 1, 0]
    assert events[("x", "y", "z")]["ranking"] == [[0, 2], 1]
    assert events[("p", "q", "r")]["ratings"] == [1, None, -1] and "scale" not in events[("p", "q", "r")]


def test_saved_means_the_next_task_is_on_screen(bert_onnx_bundle: Path, tmp_path: Path, browser: Any) -> None:
    """On a slow network, "Saved" appears only with the next task, and keys pressed while it loads do not
    act on the task just judged: before, they did, and were then thrown away with it."""
    db = tmp_path / "feedback.db"
    tasks = [{**TASK, "priority": 1.0}, {**TASK, "completions": ["x", "y"], "priority": 0.0}]
    with running(model=bert_onnx_bundle, feedback_db=str(db), **KEYS) as live:
        httpx.post(live.url + "/label/tasks", json={"tasks": tasks}, headers=TEAM)
        page = open_page(browser, live.url, "alice-key", init_script=SLOW_NEXT)
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        page.keyboard.press("Backspace")  # while the next task loads: must not undo the judged ranking
        assert shown_keys(page) == ["2.", "1.", "3."]
        assert page.locator(".completion .rank").all_inner_texts() == ["#1", "", ""]
        page.wait_for_selector("text=Saved your ranking.")
        assert page.locator(".completion .text").all_inner_texts() == ["x", "y"]  # no retry: on screen now
        assert page.locator(".completion .rank").all_inner_texts() == ["", ""]
        page.close()
    (event,) = stored(db)
    assert event["ranking"] == [1, [0, 2]]


def test_criteria_sliders_store_ratings_per_criterion(criteria_onnx_bundle: Path, tmp_path: Path,
                                                       browser: Any) -> None:
    """A criteria model's page rates each reply overall and per criterion on the card's scale."""
    from rewardmodel import read_card

    card = read_card(criteria_onnx_bundle)
    assert card.criteria is not None
    db = tmp_path / "feedback.db"
    with running(model=criteria_onnx_bundle, feedback_db=str(db), **KEYS) as live:
        httpx.post(live.url + "/label/tasks", json={"tasks": [{**TASK, "completions": ["a", "b"]}]}, headers=TEAM)
        page = open_page(browser, live.url, "carol-key")
        names = list(card.criteria.names)
        labels = page.locator(".slider").all_inner_texts()
        assert [t.split(" ")[0] for t in labels[:1 + len(names)]] == ["overall", *names]
        assert page.locator("input[type=range]").count() == 2 * (1 + len(names))
        lo = int(httpx.get(live.url + "/label/next", headers=ALICE).json()["criteria"]["scale"][0])
        # keyboard only: focus a slider, move it with the arrows, leave it with Esc
        for label, steps in (("overall 1", 2), ("overall 2", 1), (f"{names[0]} 1", 3)):
            page.focus(f"[aria-label='{label}']")
            for _ in range(steps):
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Escape")
        submitted(page, "Nothing to judge right now.")
        page.close()
    (event,) = stored(db)
    scale = event["scale"]
    assert event["ratings"] == [lo + 2, lo + 1] and scale[0] == lo
    assert event["criteria"] == {names[0]: [lo + 3, None]}
