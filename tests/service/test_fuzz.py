"""Every endpoint fuzzed from the service's own OpenAPI schema (schemathesis), valid and invalid inputs:
no 5xx, every answer a documented status with the documented body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
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
        schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
        schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
        yield schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_documented_answers(case: schemathesis.Case) -> None:
    response = case.call(timeout=60)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
