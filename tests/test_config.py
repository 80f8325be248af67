"""Settings: the [sources] address policy, running caps and retention: defaults,
overrides, refusals."""

from __future__ import annotations

import pytest

from relaystream.config import ConfigError, parse_config

APP = "5f8a1c2b3d4e5f6a7b8c9d0e"
OTHER = "aaaaaaaaaaaaaaaaaaaaaaaa"


def test_caps_and_retention_have_defaults() -> None:
    config = parse_config({"apps": [{"app_id": APP, "app_key": "k"}]}, "test")

    assert config.tasks.retention_s == 7 * 24 * 3600
    assert config.tasks.max_running_per_node == 64
    assert config.max_running_for(APP) == config.tasks.max_running_per_app == 64


def test_an_app_may_set_its_own_cap() -> None:
    config = parse_config(
        {
            "tasks": {"max_running_per_app": 5, "retention_s": 60, "purge_interval_s": 0.5},
            "apps": [
                {"app_id": APP, "app_key": "k", "max_running_tasks": 2},
                {"app_id": OTHER, "app_key": "k"},
            ],
        },
        "test",
    )

    assert config.max_running_for(APP) == 2
    assert config.max_running_for(OTHER) == 5
    assert (config.tasks.retention_s, config.tasks.purge_interval_s) == (60, 0.5)


@pytest.mark.parametrize(
    ("tasks", "key"),
    [
        ({"max_running_per_node": 0}, "tasks.max_running_per_node"),
        ({"retention_s": -1}, "tasks.retention_s"),
        ({"max_running": 3}, "tasks.max_running"),
    ],
)
def test_a_bad_cap_or_retention_is_refused_naming_the_key(
    tasks: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({"tasks": tasks}, "test")


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


def test_an_app_on_janus_needs_a_janus_section() -> None:
    app = {"app_id": APP, "app_key": "k", "room_server": "janus"}
    with pytest.raises(ConfigError, match=r"room_server = \"janus\" but no \[janus\]"):
        parse_config({"apps": [app]}, "test")

    config = parse_config({"apps": [app], "janus": {"url": "http://127.0.0.1:8088/janus"}}, "t")
    assert config.janus is not None and config.janus.url.endswith("/janus")


def test_browsers_reach_janus_at_its_browser_url_or_its_url() -> None:
    janus = {"url": "http://127.0.0.1:8088/janus"}
    config = parse_config({"janus": janus}, "t")
    assert config.janus is not None and config.janus.browser_origin == "http://127.0.0.1:8088"

    public = {**janus, "browser_url": "https://janus.example.com/janus"}
    config = parse_config({"janus": public}, "t")
    assert config.janus is not None
    assert config.janus.url_for_browsers == "https://janus.example.com/janus"
    assert config.janus.browser_origin == "https://janus.example.com"

    # The origin goes into the room page's Content-Security-Policy as it is; a browser
    # does not fetch a URL with credentials in it.
    for odd in ("https://janus.example.com;script-src*/janus", "https://u:p@janus.example.com"):
        with pytest.raises(ConfigError, match=r"janus.*no plain scheme://host:port origin"):
            parse_config({"janus": {**janus, "browser_url": odd}}, "t")


def test_a_whip_target_must_be_an_http_url() -> None:
    app = {"app_id": APP, "app_key": "k", "whip": {"url_template": "ftp://x/{room_id}"}}
    with pytest.raises(ConfigError, match=r"apps\.0\.whip\.url_template"):
        parse_config({"apps": [app]}, "test")
