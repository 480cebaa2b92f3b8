"""Registry and token requests for a private image behind token auth: cold, and again after the tag TTL."""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.harness.pki import CertificateAuthority
from tests.harness.registry import start_token
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.policy import Policy, RegistryOptions
from webhook.registry import RegistryClient, RequestEvent
from webhook.resolve import Checker
from webhook.runtimes import default_targets


@dataclass(frozen=True)
class Costs:
    cold: str
    after_ttl: str


def token_and_tag_costs(work: Path) -> Costs:
    registry = start_token(work / "registry", CertificateAuthority(work / "pki"))
    counted: Counter[str] = Counter()

    def count(event: RequestEvent) -> None:
        counted["token" if event.kind == "token" else "registry"] += 1

    try:
        image = registry.push_private_image()
        policy = Policy(registries=(RegistryOptions(registry.host, ca_file=str(registry.ca_file)),))
        auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
        keyring = Keyring.from_docker_config({"auths": {registry.host: {"auth": auth}}}, "bench secret")
        # A tag TTL of zero: the second check must prove the tag again, with the token it already has.
        checker = Checker(RegistryClient(policy.registries, on_request=count), tag_ttl=0)
        try:
            checker.check([image], default_targets(), policy, keyring, Deadline(30))
            cold = f"{counted['registry']} / {counted['token']}"
            counted.clear()
            checker.check([image], default_targets(), policy, keyring, Deadline(30))
            after = f"{counted['registry']} / {counted['token']}"
        finally:
            checker.close()
    finally:
        registry.stop()
    return Costs(cold, after)
