"""Which query values the access log hides."""

from __future__ import annotations

import pytest

from relaystream.api.access_log import redact_target


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/healthz", "/healthz"),
        ("/?Action=GetRelayStream&Version=1", "/?Action=GetRelayStream&Version=1"),
        ("/p?token=abc&x=1", "/p?token=REDACTED&x=1"),
        ("/p?access_token=abc", "/p?access_token=REDACTED"),
        ("/p?Token=a%2Bb", "/p?Token=REDACTED"),
        ("/p?%74oken=abc", "/p?%74oken=REDACTED"),  # a percent-encoded name
        (
            "/p?AppKey=k&SecretKey=s&X-Signature=g",
            "/p?AppKey=REDACTED&SecretKey=REDACTED&X-Signature=REDACTED",
        ),
        ("/p?token", "/p?token"),  # no value to hide
    ],
)
def test_secret_query_values_are_redacted(target: str, logged: str) -> None:
    assert redact_target(target) == logged
