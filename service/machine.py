"""What the machine offers a model: cores (the process's affinity), the CPU model, memory free for a new model.

Read from Linux's ``/proc`` and the cgroup files a container's limits show up in; anything unreadable reads as
unknown rather than failing, since these only tune defaults and estimates.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, which containers' cpusets set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), what a measurement on it holds for."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def available_memory() -> int:
    """Bytes free for a new model: MemAvailable, or what the cgroup limit leaves when that is lower (0: unknown)."""
    have = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                have = int(line.split()[1]) * 1024
    except OSError:
        return 0
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            have = min(have, int(limit) - used) if have else int(limit) - used
    except (OSError, ValueError):
        pass
    return max(have, 0)
