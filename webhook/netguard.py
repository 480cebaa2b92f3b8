"""The network guard: addresses a webhook must never connect to on a Pod author's say-so.

An image name is chosen by whoever writes the Pod, so without a guard the webhook would fetch from
any address the cluster can reach (the API server, a node's kubelet, the cloud metadata service).
These functions only classify; the registry client resolves names and refuses at connect time.
"""

from __future__ import annotations

import ipaddress
import re

from webhook.cache import kept_when_short

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata services: AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba, Azure wireserver.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)

# Checked in order; the first match names the reason.  Anything else that is not globally routable
# (documentation ranges, benchmarking, 240/4, ...) is "reserved".
_RANGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fec0::/10")),
    ("unique-local", ("fc00::/7",)),
    ("cgnat", ("100.64.0.0/10",)),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("broadcast", ("255.255.255.255/32",)),
    # NAT64 local-use (RFC 8215): a translator inside the network reaches the IPv4 address carried
    # in one of several layouts.  Not globally reachable, though older Pythons call it global.
    ("reserved", ("64:ff9b:1::/48",)),
)
_NETWORKS = tuple((reason, tuple(ipaddress.ip_network(n) for n in networks)) for reason, networks in _RANGES)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]*", re.ASCII)
_OCTAL_PART = re.compile(r"0[0-7]*", re.ASCII)
_DECIMAL_PART = re.compile(r"[1-9][0-9]*", re.ASCII)


def _inet_aton_number(part: str) -> int | None:
    """One part of a BSD inet_aton address: decimal, 0x hex or 0-prefixed octal."""
    if _HEX_PART.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL_PART.fullmatch(part):
        return int(part, 8)
    if _DECIMAL_PART.fullmatch(part):
        return int(part, 10)
    return None


def _parse_inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """`127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`: the forms getaddrinfo() also accepts."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_inet_aton_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    *leading, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in leading) or last >= 1 << (8 * (5 - len(parts))):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def parse_address(text: str) -> Address | None:
    """The IP address `text` spells (brackets, zone id and every inet_aton form allowed), or None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # an IPv6 zone id (fe80::1%eth0) does not change the address
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return _parse_inet_aton(text)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, translated, 6to4, NAT64, Teredo, IPv4-compatible)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def blocked_reason(address: str) -> str | None:
    """Why the guard refuses this IP address ('loopback', 'cloud metadata', ...), None when it may be used.

    A text that is no IP address at all is refused as 'not an IP address': callers pass what a
    resolver returned, so anything else is a bug or an attack.
    """
    parsed = parse_address(address)
    if parsed is None:
        return "not an IP address"
    return _reason(parsed)


def _reason(address: Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _reason(embedded)
    if address in _METADATA_ADDRESSES:
        return "cloud metadata"
    for reason, networks in _NETWORKS:
        if any(address in network for network in networks if network.version == address.version):
            return reason
    if not address.is_global:
        return "reserved"
    return None


def is_metadata_name(host: str) -> bool:
    """Whether a host name is a cloud metadata service's (`metadata.google.internal`, `metadata`)."""
    name = host.strip().rstrip(".").lower()
    return name in _METADATA_NAMES


# Asked before every registry request: the verdict on a name of a DNS name's length (with a port and
# brackets) is kept; a redirect chooses the name too, so a longer one is judged each time.
@kept_when_short(max_length=300, max_entries=1024)
def literal_blocked_reason(host: str) -> str | None:
    """The guard's verdict on a host before any lookup: a literal IP, or a metadata service name.

    None means the host may still be refused once its name is resolved.
    """
    if parse_address(host) is not None:
        return blocked_reason(host)
    if is_metadata_name(host):
        return "cloud metadata"
    return None
