"""Label Studio: its JSON exports in (pairwise and ranker results), the labeling queue out as its tasks.

**Import** (``rewardserve feedback import --from label-studio FILE``) reads the JSON export (a list of
tasks, or JSON Lines). Each task's ``annotations`` give one event per annotation:

- a ``pairwise`` result (``{"selected": "left"|"right"}``) is a choice between the two completion fields
  (``--completion-fields``, default ``text1,text2``: the Pairwise template's ``$text1``/``$text2``);
- a ``ranker`` result ranks the task's List items (``--items-field``, default ``items``: objects with an
  ``id`` and a ``body``, ``title`` or ``html``). Its value is the ids in order (``{"ranker": [ids]}``, or
  ``{"ranker": {"<tag name>": [ids]}}`` in newer versions). With ``Bucket`` tags, the buckets in their order
  are tie groups and the items left in no bucket tie last.

Cancelled annotations and other result types (choices, ratings, text) are counted as skipped. The
annotator is the annotation's ``completed_by`` (an e-mail when the export has one, else ``label-studio:<id>``),
the event id ``label-studio:<task id>:<annotation id>``.

**Export** (``rewardserve feedback export --to label-studio``) writes the queue's tasks that still need
judgements as Label Studio tasks (a List of the completions and a Ranker) plus the labeling config to paste
into the project; their annotations import back with the command above, the original prompt included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from feedback.errors import InvalidFeedback
from feedback.interop import Imported, event_id, parse_moment, prompt_of, read_records

TOOL = "label-studio"
ORIGINAL_PROMPT = "rewardserve_prompt"
"""Task field the export keeps the prompt in as sent (chat messages stay messages); import prefers it."""
LABEL_CONFIG = """<View>
  <Header value="Rank the replies, best first (drag them)"/>
  <Text name="prompt" value="$prompt"/>
  <List name="replies" value="$items" title="Replies"/>
  <Ranker name="rank" toName="replies"/>
</View>
"""


def read_label_studio(path: Path, prompt_field: str | None = None, items_field: str = "items",
                      completion_fields: Sequence[str] = ("text1", "text2")) -> Imported:
    """The events of a Label Studio JSON export (see the module docstring)."""
    imported = Imported(TOOL)
    for n, task in enumerate(read_records(path)):
        imported.records += 1
        data = task.get("data")
        where = f"{path} task {task.get('id', f'#{n}')}"
        if not isinstance(data, Mapping):
            raise InvalidFeedback(f"{where}: no 'data' object (is this a Label Studio JSON export?)")
        annotations = task.get("annotations") or []
        if not annotations:
            imported.skipped["task without annotations"] += 1
            continue
        prompt = data[ORIGINAL_PROMPT] if ORIGINAL_PROMPT in data else prompt_of(data, prompt_field, where)
        for a in annotations:
            _annotation(imported, a, task, data, prompt, where, items_field, completion_fields)
    return imported


def _annotation(imported: Imported, a: Mapping[str, Any], task: Mapping[str, Any], data: Mapping[str, Any],
                prompt: Any, where: str, items_field: str, completion_fields: Sequence[str]) -> None:
    where = f"{where} annotation {a.get('id')}"
    if a.get("was_cancelled"):
        imported.skipped["cancelled annotation"] += 1
        return
    results = [r for r in a.get("result") or [] if isinstance(r, Mapping)]
    usable = [r for r in results if r.get("type") in ("pairwise", "ranker")]
    if not usable:
        kinds = sorted({str(r.get("type")) for r in results}) or ["empty"]
        imported.skipped[f"no pairwise or ranker result ({', '.join(kinds)})"] += 1
        return
    result = usable[0]
    if len(usable) > 1:
        imported.skipped["further results in one annotation"] += len(usable) - 1
    value = result.get("value") or {}
    common = {"id": event_id(TOOL, task.get("id"), a.get("id")), "prompt": prompt,
              "annotator": _annotator(a.get("completed_by")), "created_at": parse_moment(a.get("created_at"))}
    if result["type"] == "pairwise":
        missing = [f for f in completion_fields[:2] if not isinstance(data.get(f), str)]
        if len(completion_fields) != 2 or missing:
            raise InvalidFeedback(f"{where}: a pairwise result needs two completion fields; "
                                  f"{', '.join(missing) or 'they'} not found in the task's data (its fields: "
                                  f"{', '.join(sorted(data))}); name them with --completion-fields")
        side = value.get("selected")
        if side not in ("left", "right"):
            raise InvalidFeedback(f"{where}: pairwise 'selected' must be left or right, got {side!r}")
        imported.add(where, completions=[data[f] for f in completion_fields], choice=0 if side == "left" else 1,
                     **common)
        return
    ids, texts = _items(data, items_field, where)
    groups = _ranker_groups(value.get("ranker"), ids, where)
    if len(groups) < 2:
        imported.skipped["ranking with every item tied"] += 1
        return
    ranking = [g[0] if len(g) == 1 else g for g in groups]
    imported.add(where, completions=texts, ranking=ranking, **common)


def _items(data: Mapping[str, Any], field: str, where: str) -> tuple[list[str], list[str]]:
    items = data.get(field)
    if not isinstance(items, list) or not items:
        raise InvalidFeedback(f"{where}: a ranker result ranks the List in data field {field!r}, which this task "
                              "lacks; name it with --items-field")
    ids, texts = [], []
    for item in items:
        text = next((item[k] for k in ("body", "title", "html") if isinstance(item, Mapping)
                     and isinstance(item.get(k), str)), None)
        if text is None or "id" not in item:
            raise InvalidFeedback(f"{where}: every item of {field!r} needs an 'id' and a 'body', 'title' or 'html'")
        ids.append(str(item["id"]))
        texts.append(text)
    return ids, texts


def _ranker_groups(value: Any, ids: list[str], where: str) -> list[list[int]]:
    """A ranker value as tie groups of item indices, best first."""
    index = {i: n for n, i in enumerate(ids)}
    if isinstance(value, Mapping) and len(value) == 1 and sorted(map(str, next(iter(value.values())))) == sorted(ids):
        value = next(iter(value.values()))  # newer versions: {"<tag name>": [ids]}
    if isinstance(value, list):
        lists: list[list[Any]] = [[v] for v in value]
    elif isinstance(value, Mapping):
        lists = [list(v) for k, v in value.items() if k != "_" and isinstance(v, list) and v]
    else:
        raise InvalidFeedback(f"{where}: a ranker value must list item ids, got {value!r}")
    groups: list[list[int]] = []
    for group in lists:
        unknown = [str(i) for i in group if str(i) not in index]
        if unknown:
            raise InvalidFeedback(f"{where}: the ranker names item ids {', '.join(unknown)} that the task's List lacks")
        groups.append([index[str(i)] for i in group])
    placed = {i for g in groups for i in g}
    if len(placed) != sum(len(g) for g in groups):
        raise InvalidFeedback(f"{where}: the ranker places an item twice")
    rest = [i for i in range(len(ids)) if i not in placed]
    return [*groups, rest] if rest else groups


def _annotator(who: Any) -> str:
    if isinstance(who, Mapping):
        who = who.get("email") or who.get("id")
    return f"{TOOL}:{who}" if isinstance(who, int) or (isinstance(who, str) and "@" not in who) else str(who)


def label_studio_tasks(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The queue's tasks (:meth:`LabelQueue.pending`) as Label Studio tasks for :data:`LABEL_CONFIG`."""
    return [{"data": {"prompt": _prompt_text(t["prompt"]), ORIGINAL_PROMPT: t["prompt"],
                      "items": [{"id": str(i), "body": c} for i, c in enumerate(t["completions"])],
                      "rewardserve_task": t["id"], "source": t["source"]}} for t in tasks]


def write_label_studio(tasks: Sequence[Mapping[str, Any]], out: Path) -> dict[str, Any]:
    """Write the tasks to ``out`` (JSON) and the labeling config beside it; the report."""
    config = out.with_name(out.stem + ".label_config.xml")
    out.write_text(json.dumps(label_studio_tasks(tasks), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    config.write_text(LABEL_CONFIG, encoding="utf-8")
    return {"to": TOOL, "out": str(out), "label_config": str(config), "tasks": len(tasks)}


def _prompt_text(prompt: Any) -> str:
    """What the Text tag shows: a string as it is, chat messages as ``role: content`` turns."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)
