"""One callback POST, through the checked HTTP client, on a thread of its own.

Callback URLs get the same address safety as sources (``relaystream.netpolicy``):
loopback and private addresses only with ``[callbacks] allow_private``. Each POST
makes a fresh policy, so a host name is resolved (and pinned) for that POST alone: a
receiver's DNS may change over the hours its events are retried.

The blocking client runs on a pool sized to the delivery worker's concurrency, so a
receiver that hangs holds threads of its own sends only, never the event loop's
default pool.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from relaystream.netpolicy import (
    AddressPolicy,
    AddressRefused,
    CheckedHttpClient,
    FetchError,
    HttpLimits,
    Unresolvable,
)
from relaystream.netpolicy.http import default_tls_context

ALLOW_PRIVATE_SETTING = "callbacks.allow_private"


class DeliveryError(Exception):
    """A send that did not get a 2xx answer; ``detail`` says why, for operators."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CallbackSender(Protocol):
    async def send(self, url: str, body: bytes) -> None:
        """POST ``body`` as JSON; ``DeliveryError`` unless the answer is 2xx."""
        ...


class HttpCallbackSender:
    def __init__(self, *, allow_private: bool, timeout_s: float, threads: int) -> None:
        self._allow_private = allow_private
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="callback")
        self._tls: ssl.SSLContext | None = None  # loaded on the first https receiver

    async def send(self, url: str, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        status = await loop.run_in_executor(self._executor, self._post, url, body)
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")

    def _post(self, url: str, body: bytes) -> int:
        policy = AddressPolicy(
            allow_private=self._allow_private, setting_name=ALLOW_PRIVATE_SETTING
        )
        if url.lower().startswith("https:") and self._tls is None:
            self._tls = default_tls_context()
        limits = HttpLimits(
            read_timeout_s=self._timeout_s, connect_timeout_s=self._timeout_s, max_redirects=0
        )
        client = CheckedHttpClient(policy, limits=limits, tls=self._tls)
        try:
            return client.post(url, body, total_timeout_s=self._timeout_s)
        except (AddressRefused, FetchError) as exc:
            raise DeliveryError(exc.detail) from None
        except Unresolvable as exc:
            raise DeliveryError(str(exc)) from None
        except TimeoutError:
            raise DeliveryError(f"no answer within {self._timeout_s:g} s") from None
        except OSError as exc:
            raise DeliveryError(exc.strerror or type(exc).__name__) from None

    def close(self) -> None:
        # Threads blocked on a receiver end by their own deadline; nobody waits for them.
        self._executor.shutdown(wait=False, cancel_futures=True)
