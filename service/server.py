"""Running the app under uvicorn, with the graceful shutdown of DESIGN §5.

On SIGTERM (or Ctrl-C) the process drains in three steps, and no request on an open connection is met
by a closed socket:

1. It keeps listening. ``/readyz`` answers 503 at once, new scoring requests get 503 ``draining``, and
   every answer carries ``Connection: close``, so each client's connection closes cleanly after its
   next answer. Requests admitted before the signal finish (200).
2. Once no admitted request is left, it stops listening and waits :data:`LINGER_S` for connections it
   has already accepted to send their request (they get 503 ``draining`` too).
3. uvicorn's own shutdown closes the connections that are idle, then the lifespan drains the scheduler
   and releases the model. The exit status is 0.

A second signal forces the exit at once (status 1). In Kubernetes a ``preStop`` sleep keeps the pod in
the Service's endpoints for a few seconds first, so little new traffic reaches a draining pod.
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

LINGER_S = 0.5
"""How long a draining server keeps accepted connections open, after it stops listening, for their request."""


class DrainingServer(uvicorn.Server):
    """A uvicorn server that marks the app as draining the moment a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self._state = state
        self.fatal: str | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Handle SIGINT/SIGTERM like uvicorn, but do not re-raise the signal after the graceful shutdown:
        a drained exit is a clean one (status 0), which is what supervisors and tests check."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain; a second one (SIGTERM or SIGINT) forces the exit."""
        self._state.draining = True
        if self.should_exit:
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain (steps 1 and 2 of the module docstring), then uvicorn's shutdown (step 3)."""
        self._state.begin_drain()
        deadline = time.monotonic() + (self.config.timeout_graceful_shutdown or 0)
        while self._state.admitted and not self.force_exit and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for server in self.servers:
            server.close()
        if not self.force_exit:
            await asyncio.sleep(LINGER_S)
        await super().shutdown(sockets)

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
