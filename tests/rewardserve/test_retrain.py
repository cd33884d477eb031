"""``rewardserve retrain`` end to end: judgements posted to a real server's ``/feedback``, rounds run against it
with tiny models, and what the server answers afterwards.

One server lives through the rounds, as in production, on SQLite and on PostgreSQL: a good round promotes with
no failed request during the swap, and its lineage lands in the card; a round without enough new judgements is
skipped; a poisoned round (one annotator's flipped judgements, the agreement filter off) is refused and the old
version keeps serving; with the filter on, that annotator is named and left out; a crash between export and swap
leaves the served version untouched, and a re-run finishes the round without training again; the rounds reach
/metrics; and ``--watch`` finds a promoted version that orders live judgements worse than its parent did, and
``--rollback`` swaps the parent back.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewardmodel import read_card
from rewardserve.cli import main
from rewardserve.retrain import RetrainSettings, run_round
from tests.helpers import good_bad_rows, until
from tests.server import running

ADMIN = "admin-key"
START = datetime(2026, 11, 1, tzinfo=UTC)


def _events(rows: list[dict[str, Any]], first: int, tag: str, annotator: str | None = None,
            flipped: bool = False, at: int | None = None) -> list[dict[str, Any]]:
    """Choice events of ``rows`` (the preferred reply shown first or second at random), one minute apart from
    minute ``first`` (``at``: all at that minute, the same items judged again)."""
    rng = random.Random(first)
    out = []
    for i, row in enumerate(rows):
        shown = [row["chosen"], row["rejected"]]
        rng.shuffle(shown)
        best = shown.index(row["rejected"] if flipped else row["chosen"])
        event = {"id": f"{tag}-{i}", "prompt": row["prompt"], "completions": shown, "choice": best,
                 "source": "chat-ui" if annotator is None else "labeling",
                 "created_at": (START + timedelta(minutes=(first + i) if at is None else at + i)).isoformat()}
        if annotator is not None:
            event["annotator"] = annotator
        out.append(event)
    return out


def _post(url: str, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 500):
        r = httpx.post(url + "/feedback", json={"events": events[i:i + 500]}, timeout=60)
        assert r.status_code == 200, r.text


def _version(url: str, name: str) -> str:
    return next(e["version"] for e in httpx.get(url + "/v1/models").json()["data"] if e["id"] == name)


class Traffic:
    """Clients scoring back to back until stopped; every answer's status and model version is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                r = client.post(self.url + "/score", json={"items": [{"prompt": "a ?", "completion": "good ."}]})
                self.answers.append((r.status_code, r.headers.get("x-model-version", "")))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def test_rounds_promote_skip_refuse_filter_resume_and_roll_back(
        bert_onnx_bundle: Path, good_bad_files: tuple[Path, Path], tmp_path: Path, store_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """On SQLite, then on PostgreSQL."""
    base = tmp_path / "served" / "rm"
    shutil.copytree(bert_onnx_bundle, base)
    db = store_url
    out = tmp_path / "rounds"
    rows = good_bad_rows(400, seed=11)
    with running(model=base, feedback_db=str(db), admin_keys=ADMIN) as live:
        name = read_card(base).name
        settings = RetrainSettings(db=str(db), out=out, server=live.url, name=name, admin_key=ADMIN, min_new=100,
                                   variants=("fp32",), calibration_data=str(good_bad_files[1]),
                                   calibration_samples=32, resamples=300, progress=False)
        first = _version(live.url, name)

        # round 1: good judgements (and one dated centuries ahead, which waits); promoted while clients score, none
        # of them failing
        future = {**_events(rows[:1], 0, "future")[0], "created_at": "2999-01-01T00:00:00+00:00"}
        _post(live.url, [*_events(rows[:150], 0, "r1"), future])
        with Traffic(live.url) as traffic:
            report = run_round(settings)
        assert report.result == "promoted", report.reason
        second = _version(live.url, name)
        assert second != first and report.promoted is not None and report.promoted["version"] == second
        assert traffic.answers and {status for status, _ in traffic.answers} == {200}
        assert {v for _, v in traffic.answers} <= {first, second}
        # the lineage is in the card the server now serves
        candidate = Path(report.candidate or "")
        lineage = read_card(candidate).training["lineage"]
        assert lineage["round"] == 1 and lineage["parent"]["path"] == str(base) and lineage["mode"] == "scratch"
        assert report.data["dated_in_the_future"] == 1 and lineage["data_until"] < "2027"
        assert lineage["data"]["train"]["events"] + lineage["data"]["heldout"][0]["events"] == 150
        assert lineage["data"]["train"]["by_form"] == {"choice": lineage["data"]["train"]["events"]}
        assert lineage["gate"]["passed"] and lineage["gate"]["sets"][0]["set"] == "fresh"
        assert set(lineage["gate"]["sets"][0]["by_agreement"]) == {"single"}

        # nothing new: the command skips the round (exit 0), and the server is untouched
        cli = ["retrain", "--db", str(db), "--out", str(out), "--server", live.url, "--name", name, "--admin-key",
               ADMIN, "--min-new", "100", "--variants", "fp32", "--calibration-data", str(good_bad_files[1]),
               "--resamples", "300", "--quiet"]
        capsys.readouterr()  # what the in-process rounds' training printed
        assert main(cli) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["result"] == "skipped" and again["new_judgements"] == 0 and _version(live.url, name) == second
        # the record of rounds reaches the server's metrics (read off the scrape's path: the next scrape has it)
        until(lambda: live.metric("rewardserve_retrain_rounds_total", model=name, result="promoted") == 1 and
              live.metric("rewardserve_retrain_rounds_total", model=name, result="skipped") == 1,
              "the rounds in /metrics", 30)

        # round 2: one annotator flips every judgement, the filter is off: the candidate regresses on round 1's
        # held-out set, the gate refuses it, and the promoted version keeps serving
        poison = _events(rows[150:400], 200, "mallory", annotator="mallory", flipped=True)
        _post(live.url, poison)
        capsys.readouterr()
        assert main([*cli, "--min-annotator-agreement", "0", "--epochs", "2"]) == 1  # refused
        refused = json.loads(capsys.readouterr().out)
        assert refused["result"] == "refused" and "round 1 held-out set" in refused["reason"], refused["gate"]
        assert _version(live.url, name) == second

        # round 3, filter on: honest annotators judge mallory's items too; she is named and left out
        _post(live.url, _events(rows[150:400], 0, "alice", annotator="alice", at=500))
        _post(live.url, _events(rows[150:400], 0, "bob", annotator="bob", at=800))
        crash = RuntimeError("the job was killed between export and swap")

        def crashing(path: Path) -> dict[str, Any]:
            raise crash

        with pytest.raises(RuntimeError):
            run_round(settings, swap=crashing)
        assert _version(live.url, name) == second  # exported, not swapped: the served version is untouched
        weights = next(out.glob("round-2-*/candidate/model.safetensors"))
        trained_at = weights.stat().st_mtime_ns
        resumed = run_round(settings)
        assert resumed.result == "promoted" and "re-run" in resumed.reason
        assert weights.stat().st_mtime_ns == trained_at  # the re-run did not train again
        assert resumed.quality["annotators_left_out"].keys() == {"mallory"}
        assert resumed.quality["annotators_left_out"]["mallory"]["agreement"] == 0.0
        third = _version(live.url, name)
        assert third not in (first, second)
        assert read_card(Path(resumed.candidate or "")).training["lineage"]["round"] == 2
        assert (out / "current").resolve() == Path(resumed.candidate or "").resolve()  # what a new replica serves

        # watching: the new version orders live judgements worse than its parent did; --rollback swaps it out
        now = datetime.now(UTC)
        before = [{"id": f"live-old-{i}", "prompt": f"q {i}", "completions": ["a", "b"], "choice": 0,
                   "scores": [1.0, 0.0], "reward_model": f"{name}@{second}",
                   "created_at": (now - timedelta(days=1, minutes=i)).isoformat()} for i in range(60)]
        after = [{"id": f"live-new-{i}", "prompt": f"q {i}", "completions": ["a", "b"], "choice": 0,
                  "scores": [0.0, 1.0] if i % 4 else [1.0, 0.0], "reward_model": third,
                  "created_at": (now + timedelta(minutes=1 + i)).isoformat()} for i in range(60)]
        _post(live.url, before + after)
        capsys.readouterr()
        assert main(["retrain", "--watch", "--db", str(db), "--out", str(out), "--name", name]) == 1
        watched = json.loads(capsys.readouterr().out)
        assert watched["verdict"] == "worse" and watched["live"]["parent"]["accuracy"] == 1.0
        assert watched["live"]["version"] == {"pairs": 60, "accuracy": 0.25}
        assert _version(live.url, name) == third  # watching alone changes nothing
        assert main(["retrain", "--watch", "--rollback", "--db", str(db), "--out", str(out), "--server", live.url,
                     "--name", name, "--admin-key", ADMIN]) == 1
        assert json.loads(capsys.readouterr().out)["verdict"] == "rolled_back"
        assert _version(live.url, name) == second
        until(lambda: live.metric("rewardserve_retrain_rounds_total", model=name, result="rolled_back") == 1,
              "the rollback in /metrics", 30)
