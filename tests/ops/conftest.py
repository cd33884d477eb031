"""The operations tests drive real tools: promtool, prometheus, hadolint, kustomize, kubernetes-validate.

A developer's machine may lack them, and those tests then skip saying which tool is missing; CI
installs them all (``tests/full.sh``) and sets ``REWARDSERVE_REQUIRE_OPS_TOOLS=1``, which turns a missing
tool into a failure, so the checks cannot silently stop running.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "gpu-keda", "cpu-feedback")


@pytest.fixture(scope="session")
def tool() -> Callable[..., str]:
    """``tool("promtool")``: the tool's path, or skip/fail as :func:`require_tool` says."""
    return require_tool
