"""What the server asks of a running pipeline, shared between the worker's threads.

The worker's command reader sets these; the pipeline polls them between packets and
sleeps on ``wait_stop`` so that a stop never waits for the pacer.
"""

from __future__ import annotations

import threading


class PipelineControl:
    """Stop and keyframe requests for one pipeline; safe to use from any thread."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._keyframe = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wait_stop(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a stop arrives meanwhile."""
        self._stop.wait(seconds)

    def request_keyframe(self) -> None:
        self._keyframe.set()

    def take_keyframe_request(self) -> bool:
        """True once per request: the caller must now encode a keyframe."""
        if not self._keyframe.is_set():
            return False
        self._keyframe.clear()
        return True
