"""``rewardserve feedback import --from label-studio|argilla`` and ``feedback export --to label-studio``, through
the command line, on files shaped like the tools' own exports, into a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from feedback.queue import LabelQueue, LabelTask
from feedback.store import FeedbackStore
from rewardmodel.sources import load_examples
from rewardserve.cli import main

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | str]:
    """(exit code, the JSON result or the error line)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else err.strip().splitlines()[-1]


def events(url: str) -> dict[str, dict[str, Any]]:
    store = FeedbackStore(url, pool_size=1, must_exist=True)
    try:
        return {e.event.id: e.event.content() for e in store.events()}
    finally:
        store.close()


def ls_annotation(n: int, result: list[dict[str, Any]], who: Any = 1, cancelled: bool = False) -> dict[str, Any]:
    return {"id": n, "completed_by": who, "result": result, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": "2026-11-02T10:00:00.000000Z", "updated_at": "2026-11-02T10:00:05.000000Z",
            "lead_time": 12.5, "task": 0, "project": 3}


def ls_result(kind: str, value: dict[str, Any], to: str = "replies") -> dict[str, Any]:
    return {"id": "r" + kind, "type": kind, "value": value, "origin": "manual", "from_name": "rank", "to_name": to}


def label_studio_export() -> list[dict[str, Any]]:
    """A JSON export of a Pairwise project and a List + Ranker project, as Label Studio writes one."""
    pairwise = {"id": 11, "data": {"prompt": "Say hi.", "text1": "hi", "text2": "go away"},
                "annotations": [ls_annotation(101, [ls_result("pairwise", {"selected": "left"}, "text1,text2")]),
                                ls_annotation(102, [ls_result("pairwise", {"selected": "right"})],
                                              {"id": 2, "email": "bo@example.org"}),
                                ls_annotation(103, [ls_result("pairwise", {"selected": "left"})], 3, cancelled=True),
                                ls_annotation(104, [ls_result("choices", {"choices": ["unsure"]})], 4)],
                "predictions": [], "meta": {}, "created_at": "2026-11-01T09:00:00Z", "inner_id": 1}
    items = [{"id": "a", "title": "A", "body": "two"}, {"id": "b", "body": "four"}, {"id": "c", "html": "<b>nine</b>"}]
    ranker = {"id": 12, "data": {"instruction": "Name a prime.", "items": items},
              "annotations": [ls_annotation(201, [ls_result("ranker", {"ranker": ["b", "a", "c"]})]),
                              ls_annotation(202, [ls_result("ranker", {"ranker": {"rank": ["a", "c", "b"]}})], 2),
                              ls_annotation(203, [ls_result("ranker", {"ranker": {"best": ["a"], "worst": ["c"],
                                                                                  "_": ["b"]}})], 3)]}
    return [pairwise, ranker, {"id": 13, "data": {"prompt": "x", "text1": "a", "text2": "b"}, "annotations": []}]


def test_label_studio_import(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "project-3.json"
    path.write_text(json.dumps(label_studio_export()))
    code, report = cli(capsys, "feedback", "import", "--from", "label-studio", str(path), "--db", store_url)
    assert code == 0, report
    assert isinstance(report, dict)
    assert report["records"] == 3 and report["events"] == 5 and report["stored"] == 5
    assert report["by_form"] == {"choice": 2, "ranking": 3}
    assert report["skipped"] == {"cancelled annotation": 1, "no pairwise or ranker result (choices)": 1,
                                 "task without annotations": 1}
    got = events(store_url)
    first = got["label-studio:11:101"]
    assert first["completions"] == ["hi", "go away"] and first["choice"] == 0
    assert first["annotator"] == "label-studio:1" and first["source"] == "label-studio"
    assert first["created_at"] == "2026-11-02T10:00:00Z"
    assert got["label-studio:11:102"]["choice"] == 1 and got["label-studio:11:102"]["annotator"] == "bo@example.org"
    texts = ["two", "four", "<b>nine</b>"]
    assert got["label-studio:12:201"]["prompt"] == "Name a prime."
    assert got["label-studio:12:201"]["completions"] == texts
    assert got["label-studio:12:201"]["ranking"] == [1, 0, 2]
    assert got["label-studio:12:202"]["ranking"] == [0, 2, 1]  # the newer {"<tag>": [ids]} value
    assert got["label-studio:12:203"]["ranking"] == [0, 2, 1]  # buckets in order; the unplaced item last

    # the same file again stores nothing twice
    code, again = cli(capsys, "feedback", "import", "--from", "label-studio", str(path), "--db", store_url)
    assert code == 0 and isinstance(again, dict) and again["stored"] == 0 and again["duplicates"] == 5
    # an annotation changed in Label Studio under the same ids is a conflict, and nothing of the file is stored
    edited = label_studio_export()
    edited[0]["annotations"][0]["result"][0]["value"]["selected"] = "right"
    edited.append({"id": 14, "data": {"prompt": "p", "text1": "u", "text2": "v"},
                   "annotations": [ls_annotation(301, [ls_result("pairwise", {"selected": "left"})])]})
    path.write_text("\n".join(json.dumps(t) for t in edited))  # JSON Lines reads too
    code, error = cli(capsys, "feedback", "import", "--from", "label-studio", str(path), "--db", store_url)
    assert code == 2 and "label-studio:11:101" in str(error) and "different content" in str(error)
    assert len(events(store_url)) == 5


@pytest.mark.parametrize(("task", "message"), [
    ({"id": 1, "data": {"text1": "a", "text2": "b"},
      "annotations": [ls_annotation(1, [ls_result("pairwise", {"selected": "left"})])]},
     "task 1: no prompt field 'prompt' or 'instruction'"),
    ({"id": 2, "data": {"prompt": "p", "answer_a": "a", "answer_b": "b"},
      "annotations": [ls_annotation(1, [ls_result("pairwise", {"selected": "left"})])]},
     "text1, text2 not found in the task's data (its fields: answer_a, answer_b, prompt); name them with "
     "--completion-fields"),
    ({"id": 3, "data": {"prompt": "p", "items": [{"id": "a", "body": "x"}, {"id": "b", "body": "y"}]},
      "annotations": [ls_annotation(1, [ls_result("ranker", {"ranker": ["a", "z"]})])]},
     "names item ids z that the task's List lacks"),
    ({"id": 4, "data": {"prompt": "p", "text1": "same", "text2": "same"},
      "annotations": [ls_annotation(1, [ls_result("pairwise", {"selected": "left"})])]},
     "completions must be distinct"),
])
def test_label_studio_errors_name_the_task(task: dict[str, Any], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, db = tmp_path / "export.json", tmp_path / "fb.db"
    path.write_text(json.dumps([label_studio_export()[0], task]))
    code, error = cli(capsys, "feedback", "import", "--from", "label-studio", str(path), "--db", str(db))
    assert code == 2 and message in str(error), error
    assert not db.exists()  # the whole file is checked first: the good task before it is not stored either


def test_pairwise_fields_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, db = tmp_path / "export.json", tmp_path / "fb.db"
    path.write_text(json.dumps([{"id": 2, "data": {"question": "p", "answer_a": "a", "answer_b": "b"},
                                 "annotations": [ls_annotation(1, [ls_result("pairwise", {"selected": "right"})])]}]))
    code, report = cli(capsys, "feedback", "import", "--from", "label-studio", str(path), "--db", str(db),
                       "--completion-fields", "answer_a,answer_b", "--prompt-field", "question")
    assert code == 0, report
    assert events(str(db))["label-studio:2:1"] == {
        "id": "label-studio:2:1", "prompt": "p", "completions": ["a", "b"], "choice": 1, "annotator": "label-studio:1",
        "source": "label-studio", "created_at": "2026-11-02T10:00:00Z"}


def test_queue_round_trip_through_label_studio(store_url: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Queue tasks, export them for Label Studio, annotate them the way it records a Ranker, import back: the
    events hold the original prompts (chat stays chat) and the rankings; judged tasks leave the export."""
    store = FeedbackStore(store_url, pool_size=1)
    queue = LabelQueue(store, per_task=1)
    now = datetime.now(UTC)
    queue.add([LabelTask(prompt=CHAT, completions=["2", "4", "9"], priority=1.0),
               LabelTask(prompt="Say hi.", completions=["hi", "go away"])], now)
    queue.submit(queue.next("someone")["id"], "someone", {"ranking": [0, 1, 2]}, now)  # type: ignore[index]
    queue.add([LabelTask(prompt="Say bye.", completions=["bye", "no"], priority=0.5)], now)
    store.close()

    out = tmp_path / "tasks.json"
    code, report = cli(capsys, "feedback", "export", "--to", "label-studio", "--out", str(out), "--db", store_url,
                       "--label-annotations", "1")
    assert code == 0 and isinstance(report, dict) and report["tasks"] == 2
    config = Path(report["label_config"]).read_text()
    assert '<Ranker name="rank" toName="replies"/>' in config and 'value="$items"' in config
    tasks = json.loads(out.read_text())
    assert [t["data"]["prompt"] for t in tasks] == ["Say bye.", "Say hi."]  # priority order; the judged one left
    # Label Studio adds ids and the annotations; the annotator ranks the last item first
    for n, t in enumerate(tasks):
        t["id"] = 40 + n
        ids = [i["id"] for i in t["data"]["items"]]
        t["annotations"] = [ls_annotation(500 + n, [ls_result("ranker", {"ranker": {"rank": ids[::-1]}})], 7)]
    out.write_text(json.dumps(tasks))
    code, report = cli(capsys, "feedback", "import", "--from", "label-studio", str(out), "--db", store_url)
    assert code == 0 and isinstance(report, dict) and report["stored"] == 2
    got = events(store_url)
    assert got["label-studio:40:500"]["completions"] == ["bye", "no"]
    assert got["label-studio:40:500"]["ranking"] == [1, 0]

    # a chat prompt survives the trip as messages
    store = FeedbackStore(store_url, pool_size=1)
    LabelQueue(store, per_task=2).add([LabelTask(prompt=CHAT, completions=["3", "8"])], now)
    store.close()
    code, report = cli(capsys, "feedback", "export", "--to", "label-studio", "--out", str(out), "--db", store_url)
    chat = next(t for t in json.loads(out.read_text()) if t["data"]["items"][0]["body"] == "3")
    assert chat["data"]["prompt"] == "system: Be brief.\n\nuser: Name a prime."
    chat["id"], chat["annotations"] = 77, [ls_annotation(1, [ls_result("ranker", {"ranker": ["1", "0"]})], 7)]
    out.write_text(json.dumps([chat]))
    assert cli(capsys, "feedback", "import", "--from", "label-studio", str(out), "--db", store_url)[0] == 0
    assert events(store_url)["label-studio:77:1"]["prompt"] == CHAT
    # and training reads it as a preference of "8" over "3" for the chat prompt
    trained = [e for e in load_examples(f"sqlite:///{store_url}" if "://" not in store_url else store_url)
               if e.completions == ("3", "8")]
    assert len(trained) == 1 and [(p.better, p.worse) for p in trained[0].pairs] == [(1, 0)]


def argilla_v2() -> list[dict[str, Any]]:
    """``dataset.records.to_json`` of a dataset with a ranking and a label question (Argilla 2)."""
    fields = {"prompt": "Name a prime.", "response_1": "4", "response_2": "7", "response_3": "9"}
    return [
        {"id": "rec-1", "fields": fields, "metadata": {}, "suggestions": {}, "vectors": {}, "_server_id": "9f1",
         "responses": {"ranking": [{"value": ["response_2", "response_1", "response_3"], "user_id": "u-1",
                                    "status": "submitted"},
                                   {"value": ["response_2", "response_3", "response_1"], "user_id": "u-2",
                                    "status": "draft"}],
                       "best": [{"value": "response_2", "user_id": "u-1", "status": "submitted"}]}},
        {"id": "rec-2", "fields": {**fields, "prompt": "Say hi."}, "responses": {}},
    ]


def test_argilla_import_of_each_shape(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps(argilla_v2()))
    code, report = cli(capsys, "feedback", "import", "--from", "argilla", str(v2), "--db", store_url)
    assert code == 0 and isinstance(report, dict), report
    assert report["stored"] == 1 and report["skipped"] == {"draft response": 1,
                                                           "record without a response to the question": 1}
    got = events(store_url)["argilla:rec-1:ranking:u-1"]
    assert got["completions"] == ["4", "7", "9"] and got["ranking"] == [1, 0, 2] and got["annotator"] == "u-1"
    assert got["prompt"] == "Name a prime." and got["source"] == "argilla"

    # the label question: a choice among the named fields
    code, report = cli(capsys, "feedback", "import", "--from", "argilla", str(v2), "--db", store_url,
                       "--question", "best", "--completion-fields", "response_1,response_2,response_3")
    assert code == 0 and isinstance(report, dict) and report["by_form"] == {"choice": 1}
    assert events(store_url)["argilla:rec-1:best:u-1"]["choice"] == 1

    # Argilla 1 FeedbackDataset records: ranks as numbers, equal ranks tie
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps([{"external_id": "old-1", "fields": {"instruction": "Pick.", "a": "x", "b": "y",
                                                                  "c": "z"},
                               "responses": [{"user_id": "u-9", "status": "submitted", "values": {"rank": {"value": [
                                   {"value": "c", "rank": 1}, {"value": "a", "rank": 2}, {"value": "b", "rank": 2}]}}},
                                   {"user_id": "u-8", "status": "discarded", "values": {}}],
                               "metadata": {}}]))
    code, report = cli(capsys, "feedback", "import", "--from", "argilla", str(v1), "--db", store_url)
    assert code == 0, report
    tied = events(store_url)["argilla:old-1:rank:u-9"]
    assert tied["completions"] == ["x", "y", "z"] and tied["ranking"] == [2, [0, 1]] and tied["prompt"] == "Pick."

    # flat rows (to_list(flatten=True), the Hub): fields as columns, responses as parallel lists
    flat = tmp_path / "flat.jsonl"
    flat.write_text(json.dumps({"id": "f-1", "status": "completed", "inserted_at": "2026-11-03T08:00:00Z",
                                "prompt": "Say hi.", "r1": "hello", "r2": "bye",
                                "pref.responses": [["r1", "r2"], ["r2", "r1"]],
                                "pref.responses.users": ["u-1", "u-2"],
                                "pref.responses.status": ["submitted", "submitted"]}) + "\n")
    code, report = cli(capsys, "feedback", "import", "--from", "argilla", str(flat), "--db", store_url)
    assert code == 0 and isinstance(report, dict) and report["stored"] == 2
    both = events(store_url)
    assert both["argilla:f-1:pref:u-1"]["ranking"] == [0, 1] and both["argilla:f-1:pref:u-2"]["ranking"] == [1, 0]
    assert both["argilla:f-1:pref:u-1"]["created_at"] == "2026-11-03T08:00:00Z"


def test_argilla_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "fb.db"
    records = argilla_v2()
    records[0]["responses"]["other"] = [{"value": ["response_1", "response_2"], "user_id": "u-1"}]
    path = tmp_path / "two.json"
    path.write_text(json.dumps(records))
    code, error = cli(capsys, "feedback", "import", "--from", "argilla", str(path), "--db", str(db))
    assert code == 2 and "--question" in str(error) and "ranking questions: other, ranking" in str(error)
    code, error = cli(capsys, "feedback", "import", "--from", "argilla", str(path), "--db", str(db),
                      "--question", "best")
    assert code == 2 and "--completion-fields" in str(error)
    records[0]["responses"] = {"ranking": [{"value": ["response_1", "nope"], "user_id": "u-1"}]}
    path.write_text(json.dumps(records))
    code, error = cli(capsys, "feedback", "import", "--from", "argilla", str(path), "--db", str(db))
    assert code == 2 and "record rec-1 user u-1" in str(error) and "nope" in str(error)
    path.write_text("{not json")
    code, error = cli(capsys, "feedback", "import", "--from", "argilla", str(path), "--db", str(db))
    assert code == 2 and "not JSON or JSON Lines" in str(error)
    assert not db.exists()
