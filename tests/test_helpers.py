"""The suite's own guard: a prerequisite that is missing skips on a developer's machine and fails in CI."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.helpers import require_module, require_tool


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_prerequisite_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("REWARDSERVE_REQUIRE_OPS_TOOLS", raising=False)
    outcome = Failed if ci else Skipped
    # both outcomes are caught and told apart: a skip escaping here would pass the test for the wrong reason
    with pytest.raises((Failed, Skipped), match="no_such_module_rs") as module:
        require_module("no_such_module_rs", "pip install it")
    with pytest.raises((Failed, Skipped), match="no-such-tool-rs") as tool:
        require_tool("no-such-tool-rs")
    assert type(module.value) is outcome and type(tool.value) is outcome
    assert require_module("json", "stdlib").dumps([1]) == "[1]"
