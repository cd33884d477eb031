"""Starting the servers a benchmark measures as real processes, on free ports, ready before use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def start_server(command: list[str], probe_url: str, seconds: float = 60, cwd: Path | None = None,
                 env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Run ``command`` (output discarded, or appended to ``log``) and return once ``probe_url`` answers 200."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # open as long as the process runs
    proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env} if env else None, stdout=out,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(probe_url).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{' '.join(command[:4])} … did not become ready at {probe_url}")


def stop_server(proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """SIGTERM (rewardserve drains), then kill what has not exited after ``seconds``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()  # gone, and with it what it held (a GPU's memory) before the caller goes on


def metric_sum(text: str, name: str) -> float:
    """The sum of Prometheus exposition ``text``'s samples named ``name`` over all their label sets (0 if none)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.split("{", 1)[0].split(" ", 1)[0] == name)
