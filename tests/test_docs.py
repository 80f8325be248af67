"""The documents a new user reads: they say what the code does, and their examples run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from relaystream.config import Config, load_config
from relaystream.config_docs import DESCRIPTIONS, config_keys, render

ROOT = Path(__file__).resolve().parent.parent


def test_config_docs_are_made_from_the_config_model() -> None:
    written = (ROOT / "docs" / "config.md").read_text()
    assert written == render(), "docs/config.md is out of date: run `make docs`"


def test_every_config_key_is_described_and_no_description_is_stale() -> None:
    assert sorted(DESCRIPTIONS) == sorted(config_keys())


def test_the_example_config_loads_and_shows_every_section() -> None:
    path = ROOT / "relaystream.example.toml"
    config = load_config(path)
    assert config.access_keys and config.apps
    assert config.apps[0].app_id in config.access_keys[0].apps
    shown = set(tomllib.loads(path.read_text()))
    assert shown == set(Config.model_fields), "relaystream.example.toml lacks a section"


def test_the_license_is_the_apache_license_pyproject_names() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_readme_starts_with_make_run_and_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands[:2] == ["make run", "make test"]


def test_the_changelog_has_the_current_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {pyproject['project']['version']}" in changelog
