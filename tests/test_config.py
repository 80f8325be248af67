"""Stories for the [sources] settings that shape the address policy."""

from __future__ import annotations

import pytest

from relaystream.config import ConfigError, parse_config


def test_sources_settings_are_read() -> None:
    config = parse_config(
        {
            "sources": {
                "allow_private": False,
                "trusted_url_prefixes": ["http://10.0.0.8:8000/live/"],
                "hosts": {"cdn.internal": "10.0.0.8"},
            }
        },
        "test.toml",
    )

    assert config.sources.trusted_url_prefixes == ("http://10.0.0.8:8000/live/",)
    assert config.sources.hosts == {"cdn.internal": "10.0.0.8"}


def test_a_hosts_entry_must_be_an_address() -> None:
    with pytest.raises(ConfigError, match=r"hosts\.cdn\.internal: 'cdn\.example' is not an IP"):
        parse_config({"sources": {"hosts": {"cdn.internal": "cdn.example"}}}, "test.toml")
