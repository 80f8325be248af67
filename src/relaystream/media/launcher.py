"""How the server starts a media worker process: spawned afresh, or forked by the fork server.

Either way the server gets the same handle, ``WorkerProcess``: a pid that leads its own
process group (so the server may kill it and read its /proc), the worker's stdin, stdout
and stderr as asyncio streams, and how it ended. A forked worker is not the server's
child: the fork server (forkserver.py) reaps it and reports its exit status over the
control socket. Should the fork server die, a new one is started for the next worker;
the workers it had forked run on, and the end of each is seen through a pidfd (its exit
status is then lost, which only matters for a worker that ended without a final event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from abc import ABC, abstractmethod
from enum import StrEnum

from relaystream.media.forkserver import FORK_REQUEST

logger = logging.getLogger(__name__)

STREAM_LIMIT_BYTES = 1 << 20
FORK_SERVER_START_TIMEOUT_S = 30.0
FORK_TIMEOUT_S = 10.0
# After the fork server failed to start, workers are spawned for this long before the
# next attempt (a fork server that cannot start must not slow every worker down).
FORK_SERVER_RETRY_S = 30.0
_CLOSE_TIMEOUT_S = 5.0


class WorkerStart(StrEnum):
    """How a worker process comes to be (``[media] worker_start``)."""

    FORK = "fork"  # forked by the fork server: fast, shares its library pages
    SPAWN = "spawn"  # a fresh ``python -m relaystream.media.worker``


class ForkServerError(Exception):
    """The fork server is gone or refused to fork."""


class WorkerProcess(ABC):
    """A running media worker, however it was started."""

    pid: int
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader

    @property
    @abstractmethod
    def exited(self) -> bool:
        """The process has ended (and can no longer be signalled)."""

    @abstractmethod
    async def wait(self) -> int | None:
        """Its exit code (-N: killed by signal N); None when nobody could learn it."""


class WorkerLauncher(ABC):
    """Starts media worker processes for one server."""

    async def prepare(self) -> None:  # noqa: B027 - optional: nothing to prepare by default
        """Get ready to launch quickly (called once the server is up)."""

    @abstractmethod
    async def launch(self) -> WorkerProcess: ...

    async def close(self) -> None:  # noqa: B027 - optional: nothing to release by default
        """Release what the launcher holds; running workers are not touched."""


class SpawnedWorker(WorkerProcess):
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin and process.stdout and process.stderr
        self._process = process
        self.pid = process.pid
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.stderr = process.stderr

    @property
    def exited(self) -> bool:
        return self._process.returncode is not None

    async def wait(self) -> int | None:
        return await self._process.wait()


class SpawnLauncher(WorkerLauncher):
    async def launch(self) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relaystream.media.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=STREAM_LIMIT_BYTES,
            # Its own process group: a Ctrl-C meant for the server does not reach it,
            # and a kill takes any helper process it started along with it.
            start_new_session=True,
        )
        return SpawnedWorker(process)


class ForkedWorker(WorkerProcess):
    def __init__(
        self,
        pid: int,
        ended: asyncio.Future[int | None],
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
    ) -> None:
        self.pid = pid
        self._ended = ended
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr

    @property
    def exited(self) -> bool:
        return self._ended.done()

    async def wait(self) -> int | None:
        return await asyncio.shield(self._ended)


class _Forked:
    """What the connection knows of one worker it forked, until it ends."""

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self.ended: asyncio.Future[int | None] = loop.create_future()
        self._loop = loop
        # Opened now, while the pid surely names our worker: it tells when the worker
        # ends should the fork server's report never come.
        self._pidfd: int | None = None
        with contextlib.suppress(OSError):  # already reaped: its report is on the way
            self._pidfd = os.pidfd_open(pid)

    def end(self, returncode: int | None) -> None:
        if not self.ended.done():
            self.ended.set_result(returncode)
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def orphaned(self) -> None:
        """The fork server is gone: learn the end from the pidfd, status unknown."""
        if self._pidfd is None:
            self.end(None)
        else:
            self._loop.add_reader(self._pidfd, self.end, None)


class ForkServerConnection:
    """The server's side of one running fork server."""

    def __init__(self, process: asyncio.subprocess.Process, control: socket.socket) -> None:
        self._process = process
        self._control = control
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._pending: list[asyncio.Future[_Forked]] = []
        self._workers: dict[int, _Forked] = {}
        self._reader = asyncio.create_task(self._read_reports(), name="fork-server")

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    @classmethod
    async def start(cls) -> ForkServerConnection:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "relaystream.media.forkserver",
                str(theirs.fileno()),
                str(os.getpid()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                # Out of the server's process group: only the server decides its end.
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"the fork server did not start: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        connection = cls(process, ours)
        try:
            await asyncio.wait_for(asyncio.shield(connection._ready), FORK_SERVER_START_TIMEOUT_S)
        except (TimeoutError, ForkServerError) as exc:
            await connection.close()
            raise ForkServerError(f"the fork server did not start: {exc or 'timed out'}") from exc
        except asyncio.CancelledError:
            await connection.close()
            raise
        return connection

    async def fork(self) -> ForkedWorker:
        if not self.alive:
            raise ForkServerError("the fork server is gone")
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        ours = (stdin_write, stdout_read, stderr_read)
        started: asyncio.Future[_Forked] = self._loop.create_future()
        try:
            self._pending.append(started)
            socket.send_fds(self._control, [FORK_REQUEST], [stdin_read, stdout_write, stderr_write])
        except OSError as exc:
            self._pending.remove(started)
            _close_all(ours)
            raise ForkServerError(f"could not reach the fork server: {exc}") from exc
        finally:
            # The worker holds these now; keeping them would hide its stdout's end.
            _close_all((stdin_read, stdout_write, stderr_write))
        try:
            forked = await asyncio.wait_for(asyncio.shield(started), FORK_TIMEOUT_S)
        except TimeoutError as exc:
            _close_all(ours)
            # Wedged: end it, so that the next worker gets a fresh one.
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            raise ForkServerError(f"the fork server hung for {FORK_TIMEOUT_S:.0f} s") from exc
        except BaseException:
            _close_all(ours)
            raise
        return ForkedWorker(
            forked.pid,
            forked.ended,
            await _write_stream(stdin_write),
            await _read_stream(stdout_read),
            await _read_stream(stderr_read),
        )

    async def close(self) -> None:
        """End the fork server (it exits at the end of its control socket)."""
        with contextlib.suppress(asyncio.CancelledError):
            self._reader.cancel()
            await self._reader
        self._control.close()
        try:
            await asyncio.wait_for(self._process.wait(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()

    async def _read_reports(self) -> None:
        try:
            while report := await self._loop.sock_recv(self._control, 4096):
                self._on_report(json.loads(report))
        except (OSError, ValueError) as exc:
            logger.warning("fork server %d: bad control channel: %s", self.pid, exc)
        finally:
            self._gone()

    def _on_report(self, report: dict[str, object]) -> None:
        if "ready" in report and not self._ready.done():
            self._ready.set_result(None)
        elif "started" in report:
            pid = int(str(report["started"]))
            # Registered before the next report is read: its exit may be the very next.
            forked = self._workers[pid] = _Forked(pid, self._loop)
            self._resolve_next(forked)
        elif "refused" in report:
            self._resolve_next(ForkServerError(str(report["refused"])))
        elif "exited" in report:
            pid = int(str(report["exited"]))
            if pid in self._workers:
                self._workers.pop(pid).end(int(str(report["returncode"])))

    def _resolve_next(self, outcome: _Forked | ForkServerError) -> None:
        if not self._pending:
            return
        started = self._pending.pop(0)
        if started.done():
            return
        if isinstance(outcome, ForkServerError):
            started.set_exception(outcome)
        else:
            started.set_result(outcome)

    def _gone(self) -> None:
        gone = ForkServerError("the fork server is gone")
        if not self._ready.done():
            self._ready.set_exception(gone)
        for started in self._pending:
            if not started.done():
                started.set_exception(gone)
        self._pending.clear()
        for forked in self._workers.values():
            forked.orphaned()
        self._workers.clear()


class ForkLauncher(WorkerLauncher):
    """Forks workers from one fork server, started on first need and again if it dies."""

    def __init__(self) -> None:
        self._connection: ForkServerConnection | None = None
        self._lock = asyncio.Lock()
        self._spawn = SpawnLauncher()
        self._spawn_until = 0.0

    @property
    def fork_server_pid(self) -> int | None:
        connection = self._connection
        return connection.pid if connection is not None and connection.alive else None

    async def prepare(self) -> None:
        with contextlib.suppress(ForkServerError):
            await self._connected()

    async def launch(self) -> WorkerProcess:
        if time.monotonic() >= self._spawn_until:
            try:
                return await (await self._connected()).fork()
            except ForkServerError as exc:
                logger.warning("%s; this worker is spawned instead", exc)
        return await self._spawn.launch()

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()
                self._connection = None

    async def _connected(self) -> ForkServerConnection:
        async with self._lock:
            if self._connection is not None and self._connection.alive:
                return self._connection
            if self._connection is not None:
                logger.warning("the fork server %d died; starting another", self._connection.pid)
                await self._connection.close()
                self._connection = None
            try:
                self._connection = await ForkServerConnection.start()
            except ForkServerError:
                self._spawn_until = time.monotonic() + FORK_SERVER_RETRY_S
                raise
            return self._connection


def worker_launcher(start: WorkerStart) -> WorkerLauncher:
    return ForkLauncher() if start is WorkerStart.FORK else SpawnLauncher()


def _close_all(fds: tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


async def _read_stream(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT_BYTES, loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)  # the transport owns and closes it
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


async def _write_stream(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)  # the transport owns and closes it
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop)), pipe
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)
