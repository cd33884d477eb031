"""``rewardserve feedback``: each subcommand on a real store, and its errors as one line and exit 2."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedback.events import FeedbackEvent
from feedback.store import FeedbackStore
from rewardserve.cli import main
from tests.feedback import events


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object] | str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_migrate_prune_export_stats(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    code, out = run(capsys, "feedback", "migrate", "--db", db)
    assert code == 0 and out == {"database": f"sqlite:///{db}", "migrated": True}
    FeedbackStore(db).add([FeedbackEvent.model_validate(e) for e in (
        events.choice(1, metadata={"user": "u-1"}), events.choice(2, created_at="2026-01-01T00:00:00Z"),
        events.ratings(3))], datetime.now(UTC))
    assert run(capsys, "feedback", "prune", "--db", db, "--user", "u-1")[1] == {"database": f"sqlite:///{db}",
                                                                                "deleted": 1}
    assert run(capsys, "feedback", "prune", "--db", db, "--before", "2026-06-01")[1]["deleted"] == 1  # type: ignore[index]
    code, out = run(capsys, "feedback", "export", "--db", db, "--out", str(tmp_path / "o.parquet"))
    assert code == 0 and out["records"] == 2 and (tmp_path / "o.parquet").is_file()  # type: ignore[index]  # 2 rated
    code, out = run(capsys, "feedback", "stats", "--db", db)
    assert out["by_form"] == {"ratings": 1}  # type: ignore[index]


@pytest.mark.parametrize(("args", "message"), [
    (("feedback", "stats"), "say which database"),
    (("feedback", "stats", "--db", "/nonexistent/f.db"), "no feedback database at /nonexistent/f.db"),
    (("feedback", "export", "--db", "{db}", "--out", "x.csv"), ".jsonl or .parquet"),
    (("feedback", "export", "--db", "{db}", "--out", "x.jsonl", "--since", "soon"), "not an RFC 3339 time"),
    (("feedback", "prune", "--db", "{db}"), "say what to delete"),
    (("feedback", "stats", "--db", "postgresql://u:hunter2@127.0.0.1:1/db"), "u:***@127.0.0.1:1/db"),
])
def test_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str) -> None:
    monkeypatch.delenv("REWARDSERVE_FEEDBACK_DB", raising=False)
    db = str(tmp_path / "f.db")
    FeedbackStore(db).migrate()
    code, err = run(capsys, *(a.replace("{db}", db) for a in args))
    assert code == 2 and message in str(err) and str(err).count("\n") == 1, err
    assert "hunter2" not in str(err)
