"""A small Python client for the relaystream (and Volcengine RTC) OpenAPI.

    client = RelayStreamClient("http://127.0.0.1:8080", access_key_id, secret_access_key)
    client.call("StartRelayStream", {...})

Standard library only, besides the pure signing function.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode, urlsplit

from relaystream.api.signature import sign_request

API_VERSION = "2023-11-01"


class RelayStreamError(Exception):
    """The service answered with an error envelope."""

    def __init__(self, code: str, message: str, *, request_id: str, http_status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status


class RelayStreamClient:
    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        secret_access_key: str,
        *,
        region: str = "cn-north-1",
        timeout_s: float = 10.0,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._host = urlsplit(self._endpoint).netloc
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._region = region
        self._timeout_s = timeout_s

    def call(self, action: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``action``; returns the ``Result`` or raises RelayStreamError."""
        query = {"Action": action, "Version": API_VERSION}
        payload = json.dumps(body).encode()
        headers = sign_request(
            method="POST",
            host=self._host,
            path="/",
            query=query,
            headers={"Content-Type": "application/json"},
            body=payload,
            access_key_id=self._access_key_id,
            secret_access_key=self._secret_access_key,
            region=self._region,
        )
        request = urllib.request.Request(  # noqa: S310 - the endpoint is the caller's choice
            f"{self._endpoint}/?{urlencode(query)}", data=payload, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        envelope = json.loads(raw)
        metadata = envelope.get("ResponseMetadata", {})
        error = metadata.get("Error")
        if error:
            raise RelayStreamError(
                error.get("Code", ""),
                error.get("Message", ""),
                request_id=metadata.get("RequestId", ""),
                http_status=status,
            )
        return envelope.get("Result")
