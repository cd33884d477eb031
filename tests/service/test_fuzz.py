"""Every endpoint fuzzed from the service's own OpenAPI schema (schemathesis), valid and invalid inputs:
no 5xx, every answer a documented status with the documented body.

Cases come from schemathesis' Hypothesis strategies, driven by a plain test (not its pytest plugin, whose
subtests break on newer pytest releases), one loop over every operation the served schema lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server import running

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


KEY = "fuzz-key"


@pytest.fixture(scope="module", params=["open", "keys"])
def api_schema(request: pytest.FixtureRequest, bert_onnx_bundle: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[schemathesis.BaseSchema, dict[str, str]]]:
    """The served schema and the headers a client sends: with API keys on, the scoring endpoints take the
    key, and the 401 answer is part of what they document. Small limits, so generated lists and strings
    reach them and the 413 paths are fuzzed too. Feedback is on, into a SQLite store of its own."""
    keyed = request.param == "keys"
    db = tmp_path_factory.mktemp("fuzz-feedback") / "feedback.db"
    with running(model=bert_onnx_bundle, max_items_per_request=16, max_request_tokens=2000,
                 api_keys=KEY if keyed else "", feedback_db=str(db)) as live:
        yield schemathesis.openapi.from_url(live.url + "/openapi.json"), ({"Authorization": f"Bearer {KEY}"}
                                                                            if keyed else {})


def _fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> set[int]:
    """The statuses ``operation`` answered to generated cases; raises Unsatisfiable when none can be made."""
    statuses: set[int] = set()

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        response = case.call(timeout=60, headers=headers)
        case.validate_response(response, checks=CHECKS)
        statuses.add(response.status_code)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body

    check()
    return statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_error_and_documented_answers(api_schema: tuple[schemathesis.BaseSchema, dict[str, str]],
                                                mode: GenerationMode) -> None:
    schema, headers = api_schema
    labels, fuzzed, nothing_to_generate = [], [], []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # Err raises here, naming the schema error
        labels.append(operation.label)
        try:
            statuses = _fuzz(operation, mode, headers)
        except Unsatisfiable:
            nothing_to_generate.append(operation.label)
            continue
        except Exception as exc:
            raise AssertionError(f"{operation.label} ({mode.value}): {exc}") from exc
        assert statuses, f"{operation.label} ({mode.value}) was never called"
        fuzzed.append(operation.label)
    assert {"POST /score", "POST /rerank", "POST /get_reward", "POST /classify", "POST /v1/rerank", "POST /v2/rerank",
            "GET /v1/models", "GET /healthz", "GET /readyz", "GET /metrics", "POST /feedback",
            "GET /feedback/stats"} <= set(labels)
    # Only an operation with no input at all has no invalid input to generate (negative mode's GETs);
    # every other operation, GETs included in positive mode, must really have been fuzzed.
    gets = {label for label in labels if label.startswith("GET ")}
    if mode == GenerationMode.POSITIVE:
        assert nothing_to_generate == [] and sorted(fuzzed) == sorted(labels)
    else:
        assert set(nothing_to_generate) <= gets and set(fuzzed) == set(labels) - set(nothing_to_generate)
        assert set(labels) - gets <= set(fuzzed)
