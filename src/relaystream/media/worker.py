"""Entry point of a media worker process: ``python -m relaystream.media.worker``.

Reads one PipelineSpec as a JSON line on stdin, then commands (events.WorkerCommand),
one JSON line each; writes wire messages on stdout, logs on stderr.

- ``keyframe``: a transcoding worker encodes its next frame as a keyframe (a remux cannot
  make one and ignores it).
- ``stop``: stop reading, emit nothing more, exit 0 within about a second.
- stdin at its end means the server is gone: the same as ``stop``, so that no worker
  outlives its server. SIGTERM and SIGINT end the worker at once, quietly.

- ``lease``: the node's lease on the task now runs until ``deadline`` (unix time). When
  a deadline passes without renewal the worker exits at once by itself (fencing: even
  when the node's process is frozen, its workers stop before another node may start
  the task).

Exit code 0: the source ended (after a ``SourceEnded`` event) or the worker was stopped;
2: a failure was reported as a ``SourceFailed`` event; 3: the lease passed; anything
else is a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from relaystream.media.control import PipelineControl
from relaystream.media.events import (
    CommandName,
    EventFormatError,
    SourceEnded,
    SourceFailed,
    WorkerCommand,
    WorkerEvent,
)
from relaystream.media.failures import SourceError
from relaystream.media.pipeline import PipelineEnd, RelayPipeline
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, write_event, write_packet

EXIT_OK = 0
EXIT_SOURCE_ERROR = 2
EXIT_LEASE_EXPIRED = 3
_LEASE_CHECK_S = 0.05
# After a stop, the pipeline gets this long to notice (it may be blocked in a read).
STOP_GRACE_S = 0.8

# /proc/PID/comm of every worker (the kernel keeps 15 characters). A forked worker's
# command line is the fork server's, so this is how a worker is told apart on the machine.
WORKER_PROCESS_NAME = "relaystream-mw"

logger = logging.getLogger(__name__)


class WorkerOutput:
    """Wire messages to the server, whole or not at all, from any thread.

    Once closed (a stop, the server gone), every write is dropped: a stopped worker
    says nothing more.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._closed = False

    def packet(self, packet: EncodedPacket) -> None:
        with self._lock:
            if not self._closed:
                write_packet(self._out, packet)
                self._out.flush()

    def event(self, event: WorkerEvent) -> None:
        with self._lock:
            if not self._closed:
                write_event(self._out, event)

    def close(self) -> None:
        """Write nothing more; waits for a message being written to be whole."""
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(BrokenPipeError, ValueError):
                    self._out.flush()


def run_worker(spec: PipelineSpec, output: WorkerOutput, control: PipelineControl) -> int:
    """Run the pipeline to its end, reporting how it ended; returns the exit code."""
    try:
        end = RelayPipeline(spec, output.packet, output.event, control).run()
    except SourceError as exc:
        output.event(SourceFailed(exc.detail, retryable=exc.retryable))
        return EXIT_SOURCE_ERROR
    except BrokenPipeError:
        return EXIT_OK  # the server went away mid-write: nobody left to tell
    except Exception:
        # A bug or a source that breaks the media library in a way nobody foresaw: the
        # traceback goes to the server's log, the user gets one line.
        logger.exception("media worker failed")
        output.event(SourceFailed("the media worker failed on this source"))
        return EXIT_SOURCE_ERROR
    if end is PipelineEnd.ENDED:
        output.event(SourceEnded())
    return EXIT_OK


class LeaseFence:
    """Exits the process when the last lease deadline it was given passes.

    Checked on a thread of its own: it depends neither on the pipeline nor on the node
    that sends the renewals."""

    def __init__(self) -> None:
        self._deadline_s: float | None = None

    def renew(self, deadline_s: float) -> None:
        if self._deadline_s is None:
            threading.Thread(target=self._watch, name="lease", daemon=True).start()
        self._deadline_s = deadline_s

    def _watch(self) -> None:
        while True:
            deadline_s = self._deadline_s
            if deadline_s is not None and time.time() >= deadline_s:
                os._exit(EXIT_LEASE_EXPIRED)  # at once: no cleanup may outlive the lease
            time.sleep(_LEASE_CHECK_S)


def read_commands(
    commands: IO[bytes], control: PipelineControl, fence: LeaseFence | None = None
) -> None:
    """Apply commands until a stop or the end of stdin (then stop too)."""
    for line in commands:
        if not line.strip():
            continue
        try:
            command = WorkerCommand.from_line(line)
        except (EventFormatError, ValueError) as exc:
            logger.warning("ignoring a malformed command: %s", exc)
            continue
        if command.name is CommandName.KEYFRAME:
            control.request_keyframe()
        elif command.name is CommandName.STOP:
            break
        elif command.name is CommandName.LEASE and fence is not None:
            fence.renew(float(command.args["deadline"]))
    control.stop()


def _exit_now(output: WorkerOutput, code: int) -> None:
    """Leave without Python's shutdown: no thread joins, no tracebacks, no delay."""
    output.close()
    os._exit(code)


def mark_as_worker() -> None:
    """Name this process a media worker in /proc."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(WORKER_PROCESS_NAME)


def main() -> int:
    mark_as_worker()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    output = WorkerOutput(sys.stdout.buffer)

    def on_signal(*_: Any) -> None:
        _exit_now(output, EXIT_OK)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    line = sys.stdin.buffer.readline()
    if not line:
        return EXIT_OK  # the server went away before saying anything
    spec = PipelineSpec.from_json_dict(json.loads(line))
    control = PipelineControl()
    finished = threading.Event()
    exit_code = [EXIT_OK]

    def pipeline_thread() -> None:
        exit_code[0] = run_worker(spec, output, control)
        finished.set()

    def command_thread() -> None:
        read_commands(sys.stdin.buffer, control, LeaseFence())
        # Stopped: whatever the pipeline is doing, say nothing more from here on.
        output.close()

    threading.Thread(target=command_thread, name="commands", daemon=True).start()
    threading.Thread(target=pipeline_thread, name="pipeline", daemon=True).start()
    # The main thread only waits, so signals are handled at once even while the
    # pipeline is blocked inside FFmpeg.
    while not finished.wait(0.2):
        if control.stopped:
            finished.wait(STOP_GRACE_S)
            exit_code[0] = EXIT_OK  # a stop is not a failure, however the read ended
            break
    _exit_now(output, exit_code[0])
    return exit_code[0]  # not reached


if __name__ == "__main__":
    sys.exit(main())
