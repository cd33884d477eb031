"""Loading every file type, errors naming the line, and the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardmodel import DataError
from rewardmodel.sources import load_examples
from training.data import split_heldout

ROWS = [
    {"prompt": "q1", "chosen": "a", "rejected": "b"},
    {"chosen": "\n\nHuman: hi\n\nAssistant: hey", "rejected": "\n\nHuman: hi\n\nAssistant: no"},
    {"prompt": "q3", "completions": ["x", "y", "z"], "ranking": [1, 0, 2]},
]


def _check(examples: list) -> None:
    assert [len(e.pairs) for e in examples] == [1, 1, 3]
    assert examples[1].prompt == "\n\nHuman: hi\n\nAssistant:"


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    _check(load_examples(str(path)))
    assert load_examples(str(path), limit=2)[1].where == f"{path}:2"


def test_json_list(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS))
    _check(load_examples(str(path)))


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), path)  # one schema per file: pairs only
    assert [e.completions for e in load_examples(str(path))] == [("a", "b"), (" hey", " no")]


def test_datasets_directory_with_split(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(tmp_path / "ds")
    assert len(load_examples(str(tmp_path / "ds"), split="test")) == 2
    with pytest.raises(DataError, match="no split 'train'"):
        load_examples(str(tmp_path / "ds"))


def test_malformed_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "q", "chosen": "a"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: unrecognised record"):
        load_examples(str(path))
    path.write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load_examples(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_examples(str(tmp_path / "nope.jsonl"))


def test_real_hh_data_parses_entirely(hh_data: Path) -> None:
    examples = load_examples(str(hh_data))
    assert len(examples) == 1800
    assert all(isinstance(e.prompt, str) and e.prompt.endswith("\n\nAssistant:") and len(e.completions) == 2
               for e in examples)


def test_heldout_split_is_deterministic_and_disjoint() -> None:
    examples = load_examples("builtin:demo", limit=100)
    train_a, held_a = split_heldout(examples, 0.2, seed=3)
    _, held_b = split_heldout(examples, 0.2, seed=3)
    assert held_a == held_b and len(held_a) == 20 and len(train_a) == 80
    assert not {e.where for e in train_a} & {e.where for e in held_a}
    assert split_heldout(examples, 0.2, seed=4)[1] != held_a


def test_the_demo_criteria_set_ranks_each_flaw_on_its_criterion() -> None:
    from rewardmodel.demo_data import CRITERIA, CRITERION_OF_FLAW, demo_criteria_rows

    rows = demo_criteria_rows("heldout")
    examples = load_examples("builtin:demo-criteria:heldout")
    assert len(examples) == len(rows) == 400
    for row, ex in zip(rows, examples, strict=True):
        assert ex.pairs == () and [(p.name, p.better, p.worse) for p in ex.criterion_pairs] == [
            (CRITERION_OF_FLAW[row["kind"]], 0, 1)]  # the good reply wins on its criterion, ties on the others
    named = {p.name for ex in examples for p in ex.criterion_pairs}
    assert named == set(CRITERIA)
    with pytest.raises(DataError, match="unknown demo split"):
        load_examples("builtin:demo-criteria:test")
