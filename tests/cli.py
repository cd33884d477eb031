"""The ``rewardserve`` command as a user runs it: a real subprocess, offline (for the tests of any stage)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m rewardserve ARGS`` with no hub access; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "rewardserve", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
