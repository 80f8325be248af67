"""The server's handle on one media worker process (the worker's side is worker.py).

The channel: the spec as one JSON line on the worker's stdin, then commands, one line
each; framed packets and events back on its stdout (wire.py). Stdin stays open for the
worker's whole life, so a worker whose server dies sees EOF and exits.

Stopping never depends on the worker's goodwill: ask it to stop, give it a short grace,
then SIGKILL — and keep draining its stdout meanwhile, since asyncio only reports a
child's exit once its pipes are closed (an undrained pipe once made a Stop hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from relaystream.media.events import (
    CommandName,
    SourceEnded,
    SourceFailed,
    WorkerCommand,
    WorkerEvent,
)
from relaystream.media.launcher import SpawnLauncher, WorkerLauncher, WorkerProcess
from relaystream.media.limits import MemoryLimit
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, TruncatedMessage, WireError, read_message

logger = logging.getLogger(__name__)

STOP_GRACE_S = 2.0
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class WorkerCrashed:
    """The worker died without saying why (a signal, a crash in native code)."""

    detail: str


WorkerOutput = EncodedPacket | WorkerEvent | WorkerCrashed


class MediaWorker:
    """Runs a PipelineSpec in a child process and yields what it produces.

    Iterating ``messages()`` yields EncodedPackets and events; the last item is always
    ``SourceEnded``, ``SourceFailed`` or a ``WorkerCrashed`` made up when the process
    died without a final event. The process is spawned or forked by ``launcher``.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        log_fields: dict[str, str] | None = None,
        launcher: WorkerLauncher | None = None,
    ) -> None:
        self._spec = spec
        self._launcher = launcher or SpawnLauncher()
        self._process: WorkerProcess | None = None
        self._stderr_tail: list[str] = []
        self._stderr_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.memory: MemoryLimit | None = None
        self._log_prefix = " ".join(f"{k}={v}" for k, v in (log_fields or {}).items())

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker has used so far (0 once it has exited)."""
        if self._process is None or self._process.exited:
            return 0.0
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")".
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S

    def memory_bytes(self) -> int:
        """Resident memory of the worker now (0 once it has exited)."""
        if self._process is None or self._process.exited:
            return 0
        try:
            # /proc/PID/statm: sizes in pages; the second is the resident set.
            resident_pages = int(Path(f"/proc/{self._process.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return 0
        return resident_pages * _PAGE_BYTES

    async def start(self) -> None:
        self._process = await self._launcher.launch()
        self._stderr_task = asyncio.create_task(self._collect_stderr())
        self._write_line(json.dumps(self._spec.to_json_dict()).encode() + b"\n")
        if self._spec.memory_limit_mb is not None:
            self.memory = MemoryLimit(self._process.pid, self._spec.memory_limit_mb, self.kill)
            self.memory.start()

    def send(self, command: WorkerCommand) -> None:
        """Best effort: a worker that is gone or not reading simply does not hear it."""
        self._write_line(command.to_line())

    async def messages(self) -> AsyncIterator[WorkerOutput]:
        process = self._process
        assert process is not None, "start() first"
        final: WorkerOutput | None = None
        cut_off: TruncatedMessage | None = None
        try:
            while True:
                message = await read_message(process.stdout)
                if message is None:
                    break
                if isinstance(message, SourceEnded | SourceFailed):
                    final = message
                yield message
        except TruncatedMessage as exc:
            # Its stdout ended mid-message: whether that is a crash or bad data depends
            # on how the process ended, known once it has been reaped.
            cut_off = exc
        except WireError as exc:
            final = SourceFailed(f"media worker sent bad data: {exc}")
            yield final
        returncode = await process.wait()
        if self.memory is not None and self.memory.exceeded is not None:
            # Killed on purpose for its memory: a deliberate end, not a crash to relaunch.
            yield self.memory.exceeded
            return
        if cut_off is not None and returncode == 0:
            # A worker that exits normally has flushed whole messages: its own bug.
            yield SourceFailed(f"media worker sent bad data: {cut_off}")
            return
        if final is None and not self._stopping:
            if self._stderr_task is not None:
                await self._stderr_task
            tail = " | ".join(self._stderr_tail[-3:])
            detail = _exit_detail(returncode)
            if cut_off is not None:
                # Died mid-write (a signal, the OOM killer, a segfault): a crash like any
                # other, relaunched by the run.
                detail += f" in the middle of a message ({cut_off})"
            yield WorkerCrashed(f"{detail}: {tail}" if tail else detail)

    async def stop(self) -> None:
        """Ask the worker to stop; SIGKILL it if it has not exited after a short grace."""
        process = self._process
        if self.memory is not None:
            await self.memory.close()
        if process is None:
            return
        self._stopping = True
        drain = asyncio.create_task(self._drain_stdout())
        try:
            if not process.exited:
                self.send(WorkerCommand(CommandName.STOP))
                try:
                    await asyncio.wait_for(asyncio.shield(drain), STOP_GRACE_S)
                except TimeoutError:
                    self.kill()
            await drain
            await process.wait()
        finally:
            process.stdin.close()
            if self._stderr_task is not None:
                self._stderr_task.cancel()

    def retire(self) -> None:
        """Ask the worker to finish (its messages then end); kill it after the grace."""
        if self._process is None or self._process.exited:
            return
        self._stopping = True
        self.send(WorkerCommand(CommandName.STOP))
        asyncio.get_running_loop().call_later(STOP_GRACE_S, self.kill)

    def kill(self) -> None:
        """SIGKILL the worker and everything it started."""
        if self._process is not None and not self._process.exited:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    def _write_line(self, line: bytes) -> None:
        process = self._process
        if process is None or process.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            process.stdin.write(line)

    async def _drain_stdout(self) -> None:
        assert self._process is not None
        with contextlib.suppress(ConnectionError):
            while await self._process.stdout.read(1 << 16):
                pass

    async def _collect_stderr(self) -> None:
        assert self._process is not None
        async for raw in self._process.stderr:
            line = raw.decode(errors="replace").rstrip()
            logger.warning("media worker %s: %s", self._log_prefix, line)
            self._stderr_tail = [*self._stderr_tail[-_STDERR_TAIL_LINES:], line]


def _exit_detail(returncode: int | None) -> str:
    """How the worker ended, as a crash's detail says it."""
    if returncode is None:
        return "media worker exited (its exit status was lost with the fork server)"
    detail = f"media worker exited with code {returncode}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            detail += f" (killed by {signal.Signals(-returncode).name})"
    return detail
