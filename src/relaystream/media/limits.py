"""Resource limits on a media worker, enforced from the server's side.

Memory is watched from outside: ``RLIMIT_AS`` counts address space, not memory, and
threaded libx264 reserves far more of it than it uses, so a cap that way breaks
ordinary transcodes. Instead the server polls the worker's resident set and kills a
worker that passes its limit. The kill is deliberate, and says so: the task ends with
a non-retryable failure naming the limit, not as a crash to relaunch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from relaystream.media.events import SourceFailed

POLL_INTERVAL_S = 0.25
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_memory_mb(pid: int) -> float | None:
    """The process's resident memory in MB, or None once it is gone."""
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * _PAGE_BYTES / 1_000_000


class MemoryLimit:
    """Watches one worker's resident memory; kills it past ``limit_mb``."""

    def __init__(
        self,
        pid: int,
        limit_mb: int,
        kill: Callable[[], None],
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self._pid = pid
        self._limit_mb = limit_mb
        self._kill = kill
        self._poll_interval_s = poll_interval_s
        self._task: asyncio.Task[None] | None = None
        self.peak_mb = 0.0
        # Set when the limit was hit: the worker's end, in the run's terms.
        self.exceeded: SourceFailed | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            used_mb = resident_memory_mb(self._pid)
            if used_mb is None:
                return
            self.peak_mb = max(self.peak_mb, used_mb)
            if used_mb > self._limit_mb:
                self.exceeded = SourceFailed(
                    f"the media worker used {used_mb:.0f} MB, over its "
                    f"{self._limit_mb} MB memory limit",
                    retryable=False,
                )
                self._kill()
                return
            await asyncio.sleep(self._poll_interval_s)
