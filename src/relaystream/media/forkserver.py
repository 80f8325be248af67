"""The fork server: a clean process that imports the media worker once and forks workers.

A spawned worker spends ~0.5 s starting Python and importing PyAV before it reads its
spec, and builds its own copy of every imported module's objects and the libraries'
data. The fork server pays that once per relaystream server: it imports what a worker
needs, then forks one child per request, which shares those pages until it writes them.
The child runs ``worker.main()`` exactly as a spawned worker would, on the pipes the
server handed over, so the wire channel is the same (launcher.py is the server's side).

Forking is only safe from a process that holds no lock another thread might own: the
fork server runs one thread, no event loop, no codec; it checks that before each fork.

Control channel: a SOCK_SEQPACKET unix socket on the fd named by ``argv[1]``.

- server → fork server: ``fork`` with three fds (the worker's stdin, stdout, stderr).
- fork server → server, one JSON object per message: ``{"ready": true}`` once imported;
  ``{"started": pid}`` or ``{"refused": why}`` per request, in request order;
  ``{"exited": pid, "returncode": n}`` when it reaps a worker (n < 0: killed by signal -n).

The end of the control channel means the server is gone: the fork server exits (its
workers are not touched; each exits by itself on its stdin's end). PR_SET_PDEATHSIG
covers a server killed before the socket could tell (it fires when the thread that
started us ends: the server's event loop thread, which lives as long as the server).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback

FORK_REQUEST = b"fork"
# What a worker imports, on top of worker.py's own imports (fetch imports these lazily).
_PRELOAD = (
    "relaystream.media.worker",
    "cryptography.hazmat.primitives.padding",
    "cryptography.hazmat.primitives.ciphers",
)
_PR_SET_PDEATHSIG = 1
_FDS_PER_WORKER = 3
_EXIT_FORK_FAILED = 70


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request took hold
        os._exit(0)


def _single_threaded() -> bool:
    """No other thread, Python's or a library's (a thread holding a lock at fork time
    leaves that lock held forever in the child)."""
    return threading.active_count() == 1 and len(os.listdir("/proc/self/task")) == 1


class ForkServer:
    """Forks workers on request and reports how each ended."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        # SIGCHLD wakes the select() below through this pipe.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self._wake_write)
        self._send({"ready": True})
        control = self._control.fileno()
        while True:
            try:
                readable, _, _ = select.select([control, self._wake_read], [], [])
            except InterruptedError:
                continue
            if self._wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_read, 512):
                        pass
            self._reap()
            if control in readable and not self._handle_request():
                return

    def _handle_request(self) -> bool:
        """Serve one request; False once the server is gone."""
        try:
            message, fds, _, _ = socket.recv_fds(self._control, 64, _FDS_PER_WORKER)
        except ConnectionError:
            return False
        if not message:
            for fd in fds:
                os.close(fd)
            return False
        try:
            if message != FORK_REQUEST or len(fds) != _FDS_PER_WORKER:
                self._send({"refused": f"bad request {message!r} with {len(fds)} fds"})
            elif not _single_threaded():
                self._send({"refused": "the fork server is not single-threaded"})
            else:
                self._send({"started": self._fork(fds)})
        except OSError as exc:
            self._send({"refused": f"fork failed: {exc}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _fork(self, fds: list[int]) -> int:
        # The pid is reported once the child leads its own process group, never before:
        # a kill of the group in between would find no group and miss the worker.
        settled_read, settled_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(settled_read)
                self._become_worker(fds, settled_write)
            except BaseException:
                traceback.print_exc()  # to the worker's stderr, which the server logs
            finally:
                os._exit(_EXIT_FORK_FAILED)
        os.close(settled_write)
        try:
            while os.read(settled_read, 1):  # EOF: the child is settled (or dead)
                pass
        finally:
            os.close(settled_read)
        return pid

    def _become_worker(self, fds: list[int], settled: int) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self._control.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        # Its own session and process group, as a spawned worker: a kill of the group
        # takes the worker and whatever it started, and nothing else.
        os.setsid()
        # The received fds are all >= 3 (0-2 are open here), so none is overwritten.
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        os.close(settled)
        from relaystream.media import worker

        os._exit(worker.main())

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._send({"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, object]) -> None:
        try:
            self._control.send(json.dumps(message).encode())
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise


def main() -> int:
    control = socket.socket(fileno=int(sys.argv[1]))
    _die_with_parent(int(sys.argv[2]))
    # A Ctrl-C meant for the server is not for us: we end when the server does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What is imported now is shared with every worker; the collector writes to each
    # object it visits, which would copy those pages into each worker, so it is kept
    # away from them: frozen, they are never visited again, here or in a worker.
    gc.disable()
    for module in _PRELOAD:
        importlib.import_module(module)
    gc.freeze()
    gc.enable()
    ForkServer(control).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
