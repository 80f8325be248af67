"""Sources the bundled FFmpeg cannot read (SRT, DASH), read by Debian's ``ffmpeg`` CLI.

The CLI copies the source's packets (``-c copy``, no decoding) into MPEG-TS on a pipe,
and the pipeline demuxes that like any other source. The CLI dies with the thread that
started it (util-linux ``setpriv --pdeathsig``), so a worker killed for any reason leaves
nothing behind; without setpriv, it still ends at its next write to the closed pipe.

Every http(s) request the CLI makes (the manifest again, each segment, each redirect)
goes through the worker's ``CheckingProxy`` (its ``http_proxy``), which checks it with
the same address policy as every other fetch: the CLI resolves names itself and builds
segment URLs from templates, so checking the manifest's URLs beforehand is not enough.

A pipe cannot seek: a VOD starts at a position with the CLI's own input seek (``-ss``),
and loops with the CLI's own ``-stream_loop`` (continuous timestamps, no restart gap).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections import deque
from typing import IO

import av
import av.container

from relaystream.media.failures import SourceError
from relaystream.media.formats import SourceKind, probe_options
from relaystream.media.spec import PipelineSpec
from relaystream.netpolicy.proxy import CheckingProxy

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
_STDERR_LINES = 10

# The CLI's error lines, in users' words: (fragment, detail, retryable).
_CLI_ERRORS: tuple[tuple[str, str, bool], ...] = (
    ("Connection refused", "unreachable: the source server refused the connection", True),
    ("timed out", "timed out", True),
    ("Connection timed out", "timed out", True),
    ("404 Not Found", "HTTP 404: the source server has no such stream", False),
    ("403 Forbidden", "HTTP 403: access denied by the source server", False),
    ("401 Unauthorized", "HTTP 401: the source server wants credentials", False),
    ("Server returned 4", "HTTP 4xx: the source server refused the request", False),
    ("Server returned 5", "HTTP 5xx: the source server failed", True),
    ("certificate", "TLS: the source's certificate could not be verified", False),
    ("Invalid data found", "corrupt data: the source is not a recognisable media stream", False),
)


SETPRIV = shutil.which("setpriv")


def _probe_arguments(kind: SourceKind) -> list[str]:
    """The CLI probes its input as we would (formats.py), not with its longer defaults."""
    return [
        argument for name, value in probe_options(kind).items() for argument in (f"-{name}", value)
    ]


def _protocol_options(spec: PipelineSpec, kind: SourceKind) -> list[str]:
    timeout_us = str(int(spec.open_timeout_s * 1_000_000))
    if kind is SourceKind.SRT:
        return ["-timeout", timeout_us]
    options = ["-rw_timeout", timeout_us]
    if spec.url.lower().startswith("https"):
        options += ["-tls_verify", "1" if spec.tls_verify else "0"]
    return options


class CliBridge:
    """One run of the ffmpeg CLI feeding one PyAV container."""

    def __init__(
        self,
        spec: PipelineSpec,
        kind: SourceKind,
        start_position_s: float,
        *,
        loop: bool,
        url: str | None = None,
        proxy: CheckingProxy | None = None,
    ) -> None:
        self._spec = spec
        # The URL the CLI opens: for SRT, the checked address instead of the host name.
        self._url = url or spec.url
        self._kind = kind
        self._proxy = proxy
        self.start_position_s = start_position_s
        self.loop = loop
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)

    def command(self) -> list[str]:
        seek = ["-ss", f"{self.start_position_s:.3f}"] if self.start_position_s > 0 else []
        if self.loop:
            seek += ["-stream_loop", "-1"]
        die_with_worker = [SETPRIV, "--pdeathsig", "KILL"] if SETPRIV else []
        return [
            *die_with_worker,
            FFMPEG,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            *_protocol_options(self._spec, self._kind),
            *_probe_arguments(self._kind),
            *seek,
            "-i",
            self._url,
            "-map",
            "0:v:0?",
            "-map",
            "0:a:0?",
            "-c",
            "copy",
            "-f",
            "mpegts",
            "pipe:1",
        ]

    def open(self) -> av.container.InputContainer:
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._environment(),
        )
        assert self._process.stderr is not None and self._process.stdout is not None
        threading.Thread(target=self._collect, args=(self._process.stderr,), daemon=True).start()
        try:
            return av.open(
                self._process.stdout,
                mode="r",
                format="mpegts",
                options=probe_options(self._kind),
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise self.failure() from exc

    def _environment(self) -> dict[str, str]:
        """The CLI's environment: its http(s) requests through the proxy, none around it."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if name.lower() not in {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}
        }
        if self._proxy is not None:
            environment["http_proxy"] = self._proxy.url
        return environment

    def failure(self) -> SourceError:
        """Why the CLI stopped: the proxy's refusal if there was one, else its error lines."""
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(1)
        if self._proxy is not None and self._proxy.refusal is not None:
            return SourceError(self._proxy.refusal)
        text = " ".join(self._stderr)
        for fragment, detail, retryable in _CLI_ERRORS:
            if fragment in text:
                if detail == "timed out":
                    detail = f"timed out after {self._spec.open_timeout_s:g} s"
                return SourceError(detail, retryable=retryable)
        return SourceError("the source could not be read", retryable=True)

    def ended_cleanly(self) -> bool:
        """The CLI reached the source's end without an error, and without a request the
        proxy refused (the DASH reader skips a segment it cannot fetch and goes on)."""
        if self._process is None:
            return False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(2)
        refused = self._proxy is not None and self._proxy.refusal is not None
        return self._process.returncode == 0 and not self._stderr and not refused

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _collect(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._stderr.append(raw.decode(errors="replace").strip())
