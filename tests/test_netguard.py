"""The network guard's classification of addresses and names (pure; nothing is contacted)."""

from __future__ import annotations

import pytest

from webhook.netguard import blocked_reason, is_metadata_name, literal_blocked_reason, parse_address


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("[::1]", "loopback"),
        ("10.0.0.5", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.254", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "reserved"),
        ("2001:db8::1", "reserved"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("[fd00:ec2::254]", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64, well-known prefix
        ("64:ff9b:1::a00:5", "reserved"),  # NAT64, local-use prefix (RFC 8215): any layout inside
        ("64:ff9b:1:a9fe:a9:fe00::", "reserved"),
        ("::ffff:0:7f00:1", "loopback"),  # IPv4-translated (SIIT)
        ("::ffff:0:a9fe:a9fe", "cloud metadata"),
    ],
)
def test_blocked_addresses(address: str, reason: str) -> None:
    assert blocked_reason(address) == reason


@pytest.mark.parametrize(
    "spelling",
    [
        "2130706434",  # decimal
        "0x7f000002",  # one hex number
        "0x7f.2",  # hex, short form
        "0177.0.0.2",  # octal
        "0177.0.0.02",
        "127.2",  # short form (a.b -> a.0.0.b)
        "127.0.2",
        "::ffff:127.0.0.2",  # IPv4-mapped IPv6
        "[::ffff:127.0.0.2]",
        "::ffff:7f00:2",
        "2002:7f00:2::1",  # 6to4 wrapping loopback
    ],
)
def test_every_spelling_of_a_loopback_address_is_blocked(spelling: str) -> None:
    assert blocked_reason(spelling) == "loopback"


@pytest.mark.parametrize(
    "spelling", ["::ffff:169.254.169.254", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376", "169.254.43518"]
)
def test_metadata_address_in_other_spellings(spelling: str) -> None:
    assert blocked_reason(spelling) == "cloud metadata"


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "100.128.0.1"]
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None


@pytest.mark.parametrize(
    "text", ["registry.example.com", "1.2.3.4.5", "0x100.1", "09.1.1.1", "1_0.0.0.1", ""]
)
def test_text_that_is_no_address(text: str) -> None:
    assert parse_address(text) is None
    assert blocked_reason(text) == "not an IP address"


def test_parse_address_short_forms_fill_the_last_part() -> None:
    assert str(parse_address("1.16777215")) == "1.255.255.255"
    assert parse_address("1.16777216") is None


@pytest.mark.parametrize(
    "name",
    ["metadata", "metadata.google.internal", "METADATA.google.internal.", "metadata.goog", "instance-data"],
)
def test_metadata_names(name: str) -> None:
    assert is_metadata_name(name)
    assert literal_blocked_reason(name) == "cloud metadata"


@pytest.mark.parametrize("name", ["registry.example.com", "metadata.example.com", "my-metadata"])
def test_ordinary_names_are_left_to_resolution(name: str) -> None:
    assert not is_metadata_name(name)
    assert literal_blocked_reason(name) is None


def test_literal_verdict_for_addresses() -> None:
    assert literal_blocked_reason("0x7f.1") == "loopback"
    assert literal_blocked_reason("[::ffff:10.0.0.1]") == "private"
    assert literal_blocked_reason("93.184.216.34") is None
