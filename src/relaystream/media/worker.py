"""Entry point of a media worker process: ``python -m relaystream.media.worker``.

Reads one PipelineSpec as a JSON line on stdin (then commands, one JSON line each),
writes wire messages on stdout, logs on stderr. Exit code 0 means the source ended; 2
means a failure was reported as a ``failed`` event; anything else is a crash.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import IO

from relaystream.media.events import SourceEnded, SourceFailed, WorkerEvent
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.source import SourceError
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, write_event, write_packet

EXIT_SOURCE_ENDED = 0
EXIT_SOURCE_ERROR = 2


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
    spec = PipelineSpec.from_json_dict(json.loads(sys.stdin.buffer.readline()))
    return run_worker(spec, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
