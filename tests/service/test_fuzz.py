"""Every endpoint fuzzed from the service's own OpenAPI schema (schemathesis), valid and invalid inputs:
no 5xx, every answer a documented status with the documented body.

Cases come from schemathesis' Hypothesis strategies, driven by a plain test (not its pytest plugin, whose
subtests break on newer pytest releases), one loop over every operation the served schema lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="module")
def api_schema(bert_onnx_bundle: Path) -> Iterator[schemathesis.BaseSchema]:
    # small limits so generated lists and strings reach them: 413 paths are fuzzed too
    with running(model=bert_onnx_bundle, max_items_per_request=16, max_request_tokens=2000) as live:
        yield schemathesis.openapi.from_url(live.url + "/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_error_and_documented_answers(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    labels = []
    fuzzed = []
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # Err raises here, naming the schema error
        labels.append(operation.label)

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call(timeout=60)
            case.validate_response(response, checks=CHECKS)
            if response.status_code >= 400:
                body = response.json()
                assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body

        try:
            check()
        except Unsatisfiable:
            continue  # negative mode: an operation without parameters has no invalid input to generate
        except Exception as exc:
            raise AssertionError(f"{operation.label} ({mode.value}): {exc}") from exc
        fuzzed.append(operation.label)
    assert {"POST /score", "POST /rerank", "POST /classify", "GET /metrics"} <= set(labels)
    assert {"POST /score", "POST /rerank", "POST /get_reward", "POST /classify", "POST /v2/rerank"} <= set(fuzzed)
