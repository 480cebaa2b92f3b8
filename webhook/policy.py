"""The policy: what pullcheck checks, for which targets, and what it does about findings.

Built from a mapping (the YAML file, already parsed) with one clear error per bad field.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegistryOptions:
    """One entry of the policy's `registries:` list: how to reach a registry host."""

    host: str  # 'registry.example.com:5000', 'docker.io', '127.0.0.1:5000', '[::1]:5000'
    insecure: bool = False  # plain HTTP allowed for this host (otherwise https only)
    ca_file: str | None = None  # extra CA bundle for this host, on top of the system CAs
    allow_private_network: bool = False  # lifts the network guard for this host only
    mirror: str | None = None  # host[:port] serving this registry's content: tried first, then the registry
    token_realm_hosts: tuple[str, ...] = field(default=())  # extra hosts allowed to receive credentials
