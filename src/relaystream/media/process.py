"""The server's handle on one media worker process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from relaystream.media.events import SourceEnded, SourceFailed, WorkerEvent
from relaystream.media.limits import MemoryLimit
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, WireError, read_message

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 3.0
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_STDERR_TAIL_LINES = 20


class MediaWorker:
    """Runs a PipelineSpec in a child process and yields what it produces.

    Iterating yields EncodedPackets and WorkerEvents; the last item is always an
    ``ended`` or ``error`` event, synthesised when the process dies without saying why.
    """

    def __init__(self, spec: PipelineSpec, *, log_fields: dict[str, str] | None = None) -> None:
        self._spec = spec
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_tail: list[str] = []
        self._stderr_task: asyncio.Task[None] | None = None
        self.memory: MemoryLimit | None = None
        self._log_prefix = " ".join(f"{k}={v}" for k, v in (log_fields or {}).items())

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker has used so far (0 once it has exited)."""
        if self._process is None or self._process.returncode is not None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")".
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relaystream.media.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(self._spec.to_json_dict()).encode() + b"\n")
        await self._process.stdin.drain()
        self._stderr_task = asyncio.create_task(self._collect_stderr())
        if self._spec.memory_limit_mb is not None:
            self.memory = MemoryLimit(self._process.pid, self._spec.memory_limit_mb, self._kill)
            self.memory.start()

    async def messages(self) -> AsyncIterator[EncodedPacket | WorkerEvent]:
        process = self._process
        assert process is not None and process.stdout is not None, "start() first"
        final: WorkerEvent | None = None
        try:
            while True:
                message = await read_message(process.stdout)
                if message is None:
                    break
                if isinstance(message, SourceEnded | SourceFailed):
                    final = message
                yield message
        except WireError as exc:
            final = SourceFailed(f"media worker sent bad data: {exc}")
            yield final
        returncode = await process.wait()
        if self.memory is not None and self.memory.exceeded is not None:
            # Killed on purpose: its end is the limit, whatever it managed to say.
            yield self.memory.exceeded
            return
        if final is None:
            if self._stderr_task is not None:
                await self._stderr_task
            tail = " | ".join(self._stderr_tail[-3:])
            detail = f"media worker exited with code {returncode}"
            yield SourceFailed(f"{detail}: {tail}" if tail else detail)

    async def stop(self) -> None:
        """Terminate the worker; kill it if it does not exit promptly."""
        process = self._process
        if self.memory is not None:
            await self.memory.close()
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), _STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def _collect_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for raw in self._process.stderr:
            line = raw.decode(errors="replace").rstrip()
            logger.warning("media worker %s: %s", self._log_prefix, line)
            self._stderr_tail = [*self._stderr_tail[-_STDERR_TAIL_LINES:], line]
