"""The operations tests drive real tools: promtool, prometheus, hadolint, kustomize, kubernetes-validate.

A developer's machine may lack them, and those tests then skip saying which tool is missing; CI
installs them all (``.ci/run``) and sets ``REWARDSERVE_REQUIRE_OPS_TOOLS=1``, which turns a missing
tool into a failure, so the checks cannot silently stop running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "gpu-keda")


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH; skip (or fail, in CI) when none is."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' or '.join(names)} not installed (.ci/run installs it)"
    if os.environ.get("REWARDSERVE_REQUIRE_OPS_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tool() -> Callable[..., str]:
    """``tool("promtool")``: the tool's path, or skip/fail as :func:`require_tool` says."""
    return require_tool
