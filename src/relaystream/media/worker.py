"""Entry point of a media worker process: ``python -m relaystream.media.worker``.

Reads one PipelineSpec as a JSON line on stdin (then commands, one JSON line each),
writes wire messages on stdout, logs on stderr. Exit code 0 means the source ended; 2
means a failure was reported as a ``failed`` event; 3 means the node's lease on the task
passed without renewal (fencing: the worker stops on its own, even when the node's
process is frozen); anything else is a crash.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

from relaystream.media.events import (
    CommandName,
    EventFormatError,
    SourceEnded,
    SourceFailed,
    WorkerCommand,
    WorkerEvent,
)
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.source import SourceError
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, write_event, write_packet

EXIT_SOURCE_ENDED = 0
EXIT_SOURCE_ERROR = 2
EXIT_LEASE_EXPIRED = 3
_LEASE_CHECK_S = 0.05


class StdinLines:
    """Lines of stdin read with ``os.read``: a daemon thread blocked in it holds no
    buffered-reader lock, so the interpreter can always exit around it."""

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._pending = b""

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        while b"\n" not in self._pending:
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise StopIteration
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line


class LeaseFence:
    """Exits the process when the last lease deadline it was given passes.

    Commands are read on a thread of their own, and the deadline is checked on another:
    neither depends on the pipeline, nor on the node that sends the renewals."""

    def __init__(self, commands: Iterator[bytes]) -> None:
        self._commands = commands
        self._deadline_s: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._read, name="commands", daemon=True).start()
        threading.Thread(target=self._watch, name="lease", daemon=True).start()

    def _read(self) -> None:
        for line in self._commands:
            try:
                command = WorkerCommand.from_line(line)
            except (EventFormatError, ValueError):
                continue
            if command.name is CommandName.LEASE:
                with self._lock:
                    self._deadline_s = float(command.args["deadline"])

    def _watch(self) -> None:
        while True:
            with self._lock:
                deadline_s = self._deadline_s
            if deadline_s is not None and time.time() >= deadline_s:
                # At once, from any thread: no cleanup may outlive the lease.
                os._exit(EXIT_LEASE_EXPIRED)
            time.sleep(_LEASE_CHECK_S)


def run_worker(spec: PipelineSpec, out: IO[bytes]) -> int:
    def emit_packet(packet: EncodedPacket) -> None:
        write_packet(out, packet)
        out.flush()

    def emit_event(event: WorkerEvent) -> None:
        write_event(out, event)

    try:
        RelayPipeline(spec, emit_packet, emit_event).run()
    except SourceError as exc:
        emit_event(SourceFailed(exc.detail))
        return EXIT_SOURCE_ERROR
    except BrokenPipeError:
        # The server went away or stopped us mid-write: nothing left to report to.
        return EXIT_SOURCE_ENDED
    emit_event(SourceEnded())
    return EXIT_SOURCE_ENDED


def main() -> int:
    # The server stops a worker with SIGTERM; exit at once without a traceback.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stdin = StdinLines()
    spec = PipelineSpec.from_json_dict(json.loads(next(stdin)))
    LeaseFence(stdin).start()
    return run_worker(spec, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
