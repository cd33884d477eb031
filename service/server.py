"""Running the app under uvicorn, with the graceful shutdown of DESIGN §5.

On SIGTERM (or Ctrl-C) readiness turns 503 at once and new scoring requests get 503 ``draining``;
uvicorn stops accepting connections, waits for the requests it has accepted (their items finish in the
scheduler), then the lifespan drains the queue and releases the model. In Kubernetes a ``preStop``
sleep keeps the pod in the Service's endpoints for a few seconds first, so no new request is routed to
a pod that has stopped listening.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn

from service.app import create_app
from service.settings import ServiceSettings
from service.state import ServiceState

log = logging.getLogger(__name__)


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
        """First signal: drain; a second one forces exit (uvicorn's behaviour)."""
        self._state.draining = True
        super().handle_exit(sig, frame)

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
    return 0
