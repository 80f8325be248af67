"""Stories for the address policy: which URLs may be fetched, decided without a packet."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from relaystream.netpolicy import (
    AddressPolicy,
    AddressRefused,
    HostsTable,
    ResolvedAddress,
    is_public,
    literal_address,
)
from relaystream.netpolicy.addresses import IPAddress

# Every spelling getaddrinfo (and so FFmpeg) reads as a loopback or private address.
PRIVATE_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.0.0.1",
    "127.1",
    "127.0.0.1.",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::1]",
    "[fe80::1]",
    "0.0.0.0",  # noqa: S104 - a host to refuse, nothing binds it
    "0",
    "[::]",
    "10.1.2.3",
    "172.16.0.5",
    "192.168.1.20",
    "169.254.169.254",
    "100.64.0.1",
    "198.18.0.1",
    "240.0.0.1",
    "224.0.0.1",
    "255.255.255.255",
]


@pytest.mark.parametrize("host", PRIVATE_SPELLINGS)
def test_every_spelling_of_a_private_literal_is_refused_without_resolving(host: str) -> None:
    policy = AddressPolicy(allow_private=False, resolver=_NoDns(), setting_name="x.allow")

    with pytest.raises(AddressRefused, match=r"not a public address.*x\.allow") as refused:
        policy.refuse_literal(f"http://{host}:8080/live.flv")
    address = literal_address(host)
    assert address is not None
    assert str(address) in refused.value.detail

    # The operator may allow them (a relay inside a private network).
    AddressPolicy(allow_private=True, resolver=_NoDns()).refuse_literal(f"http://{host}/x")


@pytest.mark.parametrize("host", ["8.8.8.8", "[2606:4700::1111]", "[::ffff:8.8.8.8]"])
def test_public_literals_pass(host: str) -> None:
    url = f"rtmp://{host}/app/stream"
    policy = AddressPolicy(allow_private=False, resolver=_NoDns())

    policy.refuse_literal(url)
    assert is_public(policy.destination(url).addresses[0])


def test_host_names_are_left_to_the_fetcher() -> None:
    AddressPolicy(allow_private=False, resolver=_NoDns()).refuse_literal("http://cdn.example/x")


def test_a_trusted_prefix_allows_only_its_own_origin_and_path() -> None:
    demo = "http://127.0.0.1:8080/demo/"
    policy = AddressPolicy(allow_private=False, trusted_prefixes=(demo,), resolver=_NoDns())

    assert policy.destination(f"{demo}clip.flv").port == 8080
    for url in [
        "http://127.0.0.1:8080/api/admin",
        "http://127.0.0.1:80/demo/clip.flv",
        "http://127.0.0.1:8080/demo/../admin",
        "http://127.0.0.1:8080/demo/%2e%2e/admin",
        "https://127.0.0.1:8080/demo/clip.flv",
        "http://127.0.0.1:80800/demo/clip.flv",
    ]:
        with pytest.raises(AddressRefused):
            policy.destination(url)


def test_every_answer_of_a_name_is_checked() -> None:
    resolver = _Answers({"mixed.test": [["8.8.8.8", "10.0.0.7"]]})
    policy = AddressPolicy(allow_private=False, resolver=resolver)

    with pytest.raises(AddressRefused, match=r"mixed\.test \(10\.0\.0\.7\)"):
        policy.destination("http://mixed.test/live.flv")


def test_a_name_is_resolved_once_and_its_first_answer_kept() -> None:
    resolver = _Answers({"rebind.test": [["8.8.8.8"], ["127.0.0.1"]]})
    policy = AddressPolicy(allow_private=False, resolver=resolver)

    first = policy.destination("http://rebind.test/index.m3u8")
    second = policy.destination("http://REBIND.test/segment-1.ts")

    assert [str(a) for a in first.addresses] == [str(a) for a in second.addresses] == ["8.8.8.8"]
    assert resolver.lookups == 1


def test_the_hosts_table_is_vouched_for_and_other_names_still_checked() -> None:
    table = HostsTable({"media.test": "127.0.0.1"}, _Answers({"evil.test": [["127.0.0.2"]]}))
    policy = AddressPolicy(allow_private=False, resolver=table)

    assert str(policy.destination("http://media.test:9/x.flv").addresses[0]) == "127.0.0.1"
    with pytest.raises(AddressRefused, match=r"evil\.test"):
        policy.destination("http://evil.test/x.flv")


@pytest.mark.parametrize(
    "url", ["http:///live.flv", "http://[::1/live.flv", "http://a\\@127.0.0.1/x"]
)
def test_urls_without_a_clear_host_are_refused(url: str) -> None:
    with pytest.raises(AddressRefused):
        AddressPolicy(allow_private=True, resolver=_NoDns()).destination(url)


class _NoDns:
    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        raise AssertionError(f"{host} must not be resolved")


class _Answers:
    """DNS that gives each name its answers in turn (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self._answers = answers
        self.lookups = 0

    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        self.lookups += 1
        turns = self._answers[host.lower()]
        answer = turns.pop(0) if len(turns) > 1 else turns[0]
        return [ResolvedAddress(_literal(text)) for text in answer]


def _literal(text: str) -> IPAddress:
    address = literal_address(text)
    assert address is not None
    return address
