"""Personal rewards end to end: basis heads fitted by the CLI, a user's profile refitted after their feedback commits
on a live server with a real store, `/score` and `/rerank` with a user, isolation under concurrent users, erasure.

The users are the tiny model's good/bad word set: most prefer the reply with the POSITIVE word, as the model learned;
"flipped" users prefer the NEGATIVE one. Their own reward must learn that from their judgements.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from feedback.events import utc_now
from feedback.profiles import load_profile
from feedback.store import FeedbackStore
from rewardmodel import read_card, write_card
from rewardmodel.personal import bundle_basis
from tests.cli import run_cli
from tests.helpers import good_bad_rows, until, user_rows
from tests.server import error_of, running

HELD_OUT = good_bad_rows(24, seed=99)
ITEMS = [{"prompt": r["prompt"], "completion": c} for r in HELD_OUT for c in (r["chosen"], r["rejected"])]


@pytest.fixture(scope="module")
def personal_bundle(bert_onnx_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny BERT (fp32, int8, int8-static exported) with K = 4 basis heads, fitted by the CLI."""
    root = tmp_path_factory.mktemp("personal")
    bundle = root / "bundle"
    shutil.copytree(bert_onnx_bundle, bundle)
    data = root / "users.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in user_rows()))
    done = run_cli("personalize", "fit", "--model", str(bundle), "--data", str(data), "--k", "4", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    card = read_card(bundle)  # the heads' file is hashed with the rest
    assert card.personalization == record and "personal.safetensors" in card.files
    assert record["k"] == 4 and record["users"] == 8 and record["pairs"] == 320
    held = record["held_out"]
    # half the users disagree with the model: it is right on about half the held-out pairs, their own weights on more
    assert held["pairs"] == 64 and 0.3 < held["plain_accuracy"] < 0.7
    assert held["personal_accuracy"] > held["plain_accuracy"] + 0.2
    return bundle


def _choices(user: str, rows: list[dict[str, Any]], flipped: bool, first: int = 0) -> list[dict[str, Any]]:
    """``user``'s choice events on ``rows`` (the NEGATIVE reply when ``flipped``)."""
    return [{"id": f"{user}-{first + i}", "prompt": r["prompt"], "completions": [r["chosen"], r["rejected"]],
             "choice": 1 if flipped else 0, "metadata": {"user": user}} for i, r in enumerate(rows)]


def _score(url: str, user: str | None = None, items: list[dict[str, Any]] = ITEMS) -> dict[str, Any]:
    r = httpx.post(url + "/score", json={"items": items} | ({"user": user} if user else {}), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _prefers_negative(scores: list[float]) -> float:
    """Share of held-out pairs where the NEGATIVE reply scores higher."""
    s = np.asarray(scores).reshape(-1, 2)
    return float(np.mean(s[:, 1] > s[:, 0]))


@pytest.mark.parametrize(("backend", "variant", "store"), [
    ("onnx", "fp32", "sqlite"), ("onnx", "int8", "sqlite"), ("openvino", "int8-static", "sqlite"),
    ("torch", "fp32", "sqlite"), ("onnx", "fp32", "postgresql")])
def test_a_users_feedback_becomes_their_reward_and_erasure_takes_it_away(
        personal_bundle: Path, backend: str, variant: str, store: str, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    db = str(tmp_path / "feedback.db") if store == "sqlite" else str(request.getfixturevalue("pg_url"))
    with running(model=personal_bundle, feedback_db=db, backend=backend, variant=variant) as live:
        about = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]["personalization"]
        assert about["k"] == 4 and about["min_judgements"] == 5 and about["why_not"] is None
        plain = _score(live.url)
        assert "personal" not in plain and _prefers_negative(plain["scores"]) < 0.25  # the model prefers POSITIVE
        # a user without judgements gets the population's reward: the plain one
        new = _score(live.url, "alice")
        assert new["personal"] == {"user": "alice", "profile": "population", "judgements": 0}
        assert new["scores"] == pytest.approx(plain["scores"], abs=1e-6)

        # alice judges 16 pairs the other way; after the commit her profile is refitted in the background
        r = httpx.post(live.url + "/feedback", json={"events": _choices("alice", good_bad_rows(16, seed=7), True)},
                       timeout=30)
        assert r.status_code == 200 and r.json()["accepted"] == 16
        until(lambda: live.metric("rewardserve_profile_fits_total", result="ok") >= 1, "alice's profile refit", 60)
        mine = _score(live.url, "alice")
        assert mine["personal"] == {"user": "alice", "profile": "personal", "judgements": 16}
        assert _prefers_negative(mine["scores"]) > 0.75  # her reward now prefers what she prefers, on new pairs

        # concurrent users never see each other's reward (nor does a request without a user)
        expected = {"alice": mine["scores"], "bob": plain["scores"], None: plain["scores"]}
        jobs = [u for _ in range(12) for u in ("alice", "bob", None)]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda u: (u, _score(live.url, u, ITEMS)), jobs))
        # int8 quantizes activations per batch, so its scores move a little with the batch's company (not a leak:
        # alice's reward and the plain one differ by about 4 on every item)
        tolerance = 1e-5 if "int8" not in variant else 0.05
        for user, answer in answers:
            assert answer["scores"] == pytest.approx(expected[user], abs=tolerance), user
            assert answer.get("personal", {}).get("user") == user

        # the header says the same as the body's field, on /rerank too
        pair = HELD_OUT[0]
        ranked = httpx.post(live.url + "/rerank", headers={"x-rewardserve-user": "alice"}, timeout=30,
                            json={"prompt": pair["prompt"], "completions": [pair["chosen"], pair["rejected"]]}).json()
        assert ranked["best_index"] == 1 and ranked["personal"]["profile"] == "personal"
        assert live.metric("rewardserve_scored_requests_total", personal="personal") >= 13
        assert live.metric("rewardserve_scored_requests_total", personal="population") >= 13
        assert live.metric("rewardserve_personal_shift_count") >= len(ITEMS)

        # erasure: her judgements and her profile go in one command
        pruned = run_cli("feedback", "prune", "--db", db, "--user", "alice")
        assert pruned.returncode == 0 and json.loads(pruned.stdout)["deleted"] == 16, pruned.stderr[-1000:]
        gone = _score(live.url, "alice")
        assert gone["personal"] == {"user": "alice", "profile": "population", "judgements": 0}
        assert gone["scores"] == pytest.approx(plain["scores"], abs=1e-6)


def test_what_cannot_be_personal_is_a_clear_400(personal_bundle: Path, bert_onnx_bundle: Path,
                                                 tmp_path: Path) -> None:
    db = str(tmp_path / "feedback.db")
    with running(model=bert_onnx_bundle, feedback_db=db) as live:  # no basis heads
        r = httpx.post(live.url + "/score", json={"items": ITEMS[:2], "user": "alice"}, timeout=30)
        assert "personalize fit" in error_of(r, 400, "no_personalization")
        r = httpx.post(live.url + "/score", json={"items": ITEMS[:2]}, headers={"x-rewardserve-user": "x" * 300})
        error_of(r, 400, "invalid_input")
    bundle = tmp_path / "bundle"
    shutil.copytree(personal_bundle, bundle)
    card = read_card(bundle)
    onnx = {**card.onnx, "int8": {**card.onnx["int8"], "rows": {**card.onnx["int8"]["rows"], "passed": False}}}
    from dataclasses import replace

    write_card(bundle, replace(card, onnx=onnx))
    with running(model=bundle, feedback_db=db, variant="int8") as live:
        r = httpx.post(live.url + "/score", json={"items": ITEMS[:2], "user": "alice"}, timeout=30)
        assert "parity gate" in error_of(r, 400, "no_personalization")
        about = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]["personalization"]
        assert "parity gate" in about["why_not"]
        assert httpx.post(live.url + "/score", json={"items": ITEMS[:2]}, timeout=30).status_code == 200
    with running(model=bundle) as live:  # no store: every user is the population
        assert _score(live.url, "alice", ITEMS[:2])["personal"]["profile"] == "population"


def test_refit_on_demand_writes_every_users_profile(personal_bundle: Path, store_url: str) -> None:
    store = FeedbackStore(store_url)
    from feedback.events import FeedbackEvent

    events = [FeedbackEvent.model_validate(e) for e in
              _choices("carol", good_bad_rows(12, seed=3), True) + _choices("dave", good_bad_rows(3, seed=4), False)]
    store.add(events, utc_now())
    done = run_cli("personalize", "refit", "--model", str(personal_bundle), "--db", store_url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) | {"database": ""} == {
        "database": "", "basis": bundle_basis(personal_bundle, read_card(personal_bundle).personalization).id,
        "users": 2, "personal": 1, "population": 1}
    basis = bundle_basis(personal_bundle, read_card(personal_bundle).personalization)
    carol, dave = load_profile(store, "carol", basis.id), load_profile(store, "dave", basis.id)
    assert carol is not None and carol.judgements == 12 and carol.weights != tuple(basis.population)
    assert dave is not None and dave.judgements == 3 and dave.weights == tuple(basis.population)
    assert store.prune(user="carol") == 12 and load_profile(store, "carol", basis.id) is None
    assert load_profile(store, "dave", basis.id) is not None
    store.close()
