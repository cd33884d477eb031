"""Running the app under uvicorn, with the graceful shutdown of docs/design.md §5.

On SIGTERM (or Ctrl-C) the process drains in three steps, and no request on an open connection is met
by a closed socket:

1. It keeps listening. ``/readyz`` answers 503 at once, new scoring requests get 503 ``draining`` (with
   ``Retry-After``), and every answer carries ``Connection: close``, so each client's connection closes
   cleanly after its next answer. Requests admitted before the signal finish (200).
2. Once no admitted request is left, it waits for a quiet moment, :data:`QUIET_S` without a new
   connection, and stops listening then. The kernel resets connections it has accepted but the server
   has not yet taken, so closing the listener while clients are connecting would drop their requests.
3. It gives the connections already open up to :data:`LINGER_S` to send their request and be answered
   (each closes after its answer), then uvicorn's own shutdown closes what is left, idle, and the
   lifespan drains the scheduler and releases the model. The exit status is 0.

SIGHUP re-reads ``--models-file`` and hot-swaps the entries that changed (see :mod:`service.registry`).

Steps 1 and 2 together last at most the graceful-shutdown timeout. A second signal forces the exit at
once (status 1). In Kubernetes a ``preStop`` sleep keeps the pod in the Service's endpoints for a few
seconds first, so little new traffic reaches a draining pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Generator
from types import FrameType

import uvicorn

from service.app import create_app
from service.settings import ServiceSettings
from service.state import ServiceState

log = logging.getLogger(__name__)

QUIET_S = 0.25
"""A draining server stops listening after this long without a new connection (or at its deadline)."""
LINGER_S = 2.0
"""After it stops listening, how long a draining server waits for open connections to be answered and close."""


class DrainingServer(uvicorn.Server):
    """A uvicorn server that marks the app as draining the moment a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self._state = state
        self._reloads: set[asyncio.Task[None]] = set()
        self._forced = asyncio.Event()
        """Set on the loop when a second signal forces the exit."""
        self.fatal: str | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Handle SIGINT/SIGTERM like uvicorn, but do not re-raise the signal after the graceful shutdown:
        a drained exit is a clean one (status 0), which is what supervisors and tests check."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.handle_reload)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup; remembers the event loop, where a SIGHUP's reload must run."""
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_reload(self, sig: int, frame: FrameType | None) -> None:
        """SIGHUP: re-read the models file on the event loop (swaps what changed)."""
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(lambda: self._reloads.add(loop.create_task(self._state.reload_file())))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain; a second one (SIGTERM or SIGINT) forces the exit."""
        self._state.begin_drain()  # at once (only a flag): /readyz says so before the loop runs again
        if self.should_exit:
            self.force_exit = True
            loop = getattr(self, "_loop", None)
            if loop is not None:  # wake the drain's wait: the set must run on the loop, not in a signal handler
                loop.call_soon_threadsafe(self._forced.set)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain (steps 1 to 3 of the module docstring), then uvicorn's shutdown."""
        self._state.begin_drain()
        self._state.flush()
        deadline = time.monotonic() + (self.config.timeout_graceful_shutdown or 0)
        if not self.force_exit:  # until the last admitted request is answered, a second signal, or the deadline
            answered = asyncio.ensure_future(self._state.in_flight.idle())
            forced = asyncio.ensure_future(self._forced.wait())
            await asyncio.wait({answered, forced}, timeout=max(0.0, deadline - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
            for task in (answered, forced):
                task.cancel()
        await self._quiet_moment(deadline)
        for server in self.servers:
            server.close()
        linger = time.monotonic() + LINGER_S
        while self.server_state.connections and not self.force_exit and time.monotonic() < linger:
            await asyncio.sleep(0.01)
        await super().shutdown(sockets)

    async def _quiet_moment(self, deadline: float) -> None:
        """Return once no connection has been opened for ``QUIET_S`` (or at ``deadline``)."""
        known = set(self.server_state.connections)
        quiet_since = time.monotonic()
        while not self.force_exit and time.monotonic() < deadline and time.monotonic() - quiet_since < QUIET_S:
            await asyncio.sleep(0.01)
            now = set(self.server_state.connections)
            if now - known:
                quiet_since = time.monotonic()
            known = now

    def fail(self, reason: str) -> None:
        """The model could not be loaded: stop serving and exit non-zero."""
        self.fatal = reason
        self.should_exit = True


def serve(settings: ServiceSettings) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code (1 when the model failed to load)."""
    holder: list[DrainingServer] = []
    app = create_app(settings, on_fatal=lambda reason: holder[0].fail(reason))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=settings.access_log, timeout_keep_alive=30,
                            timeout_graceful_shutdown=int(settings.request_timeout_s) + 5)
    server = DrainingServer(config, app.state.service)
    holder.append(server)
    server.run()
    if server.fatal:
        print(f"error: {server.fatal}", file=sys.stderr)
        return 1
    if server.force_exit:
        print("error: forced exit on a second signal; requests still in flight were dropped", file=sys.stderr)
        return 1
    return 0
