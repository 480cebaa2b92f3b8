"""Credentials go only where they belong: never to another origin by a redirect, never to a token
realm that is not https on the registry's own domain, never from one namespace's Secrets to another
namespace's Pod, and never into logs, answers, warnings, metrics or audit annotations.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.harness import hostile
from tests.harness.hostile import HostileServer, LoudServe, small_manifest
from tests.harness.pki import CertificateAuthority
from tests.harness.registry import Registry
from tests.harness.serving import write_policy
from webhook.app import build_app
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.engine import Webhook
from webhook.metrics import Metrics
from webhook.policy import Policy, RegistryOptions
from webhook.registry import RegistryClient
from webhook.resolve import Checker

DEADLINE = 1.5
USERNAME = "leak-user-" + secrets.token_hex(4)
PASSWORD = "leak-pass-" + secrets.token_hex(8)
SECRETS = (PASSWORD, base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode())


def _basic_then(then: hostile.Behaviour) -> hostile.Behaviour:
    """401 with a Basic challenge until the request carries Authorization, then `then`."""

    def answer(handler: hostile.Handler) -> None:
        if not handler.headers.get("Authorization"):
            handler.reply(401, b"{}", [("WWW-Authenticate", 'Basic realm="hostile"')])
            return
        then(handler)

    return answer


def _authorized(server: HostileServer, prefix: str) -> list[str]:
    return [s.headers["authorization"] for s in server.requests(prefix) if "authorization" in s.headers]


ROUTES = ("redirected", "own-realm", "other-host-realm", "http-realm", "metadata-realm", "private-realm")


class Servers:
    """One registry per hostile behaviour (a registry's challenge is remembered per origin), all of
    them plain HTTP and the owners of the credentials; another origin; and an https token realm
    whose certificate names both 127.0.0.1 and localhost."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.registries = {name: HostileServer() for name in ROUTES}
        self.elsewhere = HostileServer()
        self.realm = HostileServer(ca.server_pair("hostile-realm"))

    def close(self) -> None:
        for server in (*self.registries.values(), self.elsewhere, self.realm):
            server.close()


@pytest.fixture
def servers(test_ca: CertificateAuthority) -> Iterator[Servers]:
    servers = Servers(test_ca)
    yield servers
    servers.close()


@pytest.mark.served
def test_credentials_reach_only_their_registry_and_appear_nowhere(
    tmp_path: Path, servers: Servers, test_ca: CertificateAuthority
) -> None:
    registries, elsewhere, realm = servers.registries, servers.elsewhere, servers.realm
    realm_port = realm.server_address[1]
    elsewhere.route("/", hostile.document(small_manifest()))
    realm.route("/", hostile.token)
    behaviours = {
        "redirected": _basic_then(hostile.redirect(f"{elsewhere.url}/v2/redirected/app/manifests/v1")),
        "own-realm": hostile.bearer_challenge(f"https://127.0.0.1:{realm_port}/token"),  # the control
        "other-host-realm": hostile.bearer_challenge(f"https://localhost:{realm_port}/token"),
        "http-realm": hostile.bearer_challenge(f"http://{elsewhere.host}/token"),
        "metadata-realm": hostile.bearer_challenge("http://169.254.169.254/latest/meta-data/token"),
        "private-realm": hostile.bearer_challenge("https://10.0.0.1/token"),
    }
    for name, behaviour in behaviours.items():
        registries[name].route("/v2/", behaviour)
    auths = {server.host: {"username": USERNAME, "password": PASSWORD} for server in registries.values()}
    docker_config = tmp_path / "config.json"
    docker_config.write_text(json.dumps({"auths": auths}))
    reachable = {"insecure": True, "allowPrivateNetwork": True}
    tls = {"caFile": str(test_ca.ca_file), "allowPrivateNetwork": True}
    policy = write_policy(
        tmp_path / "policy.yaml",
        [{"host": server.host, **reachable} for server in (*registries.values(), elsewhere)]
        + [{"host": f"127.0.0.1:{realm_port}", **tls}, {"host": f"localhost:{realm_port}", **tls}],
        mode="warn",
        dockerConfig=str(docker_config),
        resolutionTimeoutSeconds=DEADLINE,
    )
    webhook = LoudServe(tmp_path, policy, "--log-level", "DEBUG").wait_ready()
    answers: list[str] = []
    try:
        with webhook.client(DEADLINE + 3) as client:
            for server in registries.values():
                image = f"{server.host}/app:v1"
                for body in (hostile.review(image), hostile.review(image, f"{server.host}/missing:v1")):
                    answer = client.post("/validate", json=body)
                    assert answer.status_code == 200
                    answers.append(answer.text)
            answers.append(client.get("/metrics").text)
        output = webhook.output()
    finally:
        webhook.stop()

    assert _authorized(registries["redirected"], "/") and _authorized(elsewhere, "/") == []
    # One server answers both names; the Host header tells which realm was asked.
    own_realm = [s for s in realm.requests("/token") if s.headers["host"] == f"127.0.0.1:{realm_port}"]
    assert own_realm and all("authorization" in s.headers for s in own_realm)
    other_host = [s for s in realm.requests("/token") if s.headers["host"] == f"localhost:{realm_port}"]
    assert other_host and all("authorization" not in s.headers for s in other_host)
    http_realm = elsewhere.requests("/token")
    assert http_realm and all("authorization" not in s.headers for s in http_realm)
    assert webhook.refused_connects() == []  # the metadata and private realms were never dialled

    everything = "\n".join([output, *answers])
    assert "BLOCKED_REGISTRY" in everything
    for secret in SECRETS:
        assert secret not in everything
    foreign = elsewhere.requests() + other_host
    assert not any(secret in json.dumps([s.__dict__ for s in foreign]) for secret in SECRETS)


# ---- namespaces --------------------------------------------------------------------------------------


class NamespaceSecrets:
    """The pull secrets of each namespace (the cluster's Secrets, as webhook.kube.PullSecrets reads them)."""

    def __init__(self, keyrings: dict[str, Keyring]) -> None:
        self.keyrings = keyrings

    def keyring(
        self,
        namespace: str,
        secret_names: Sequence[str],
        service_account: str,
        deadline: Deadline | None = None,
    ) -> Keyring:
        return self.keyrings.get(namespace, Keyring.empty())


@pytest.mark.registry
def test_one_namespaces_secret_never_serves_another_namespaces_pod(
    htpasswd_registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    registry = htpasswd_registry
    image = registry.push_private_image("private/leak", "v1")
    assert registry.username and registry.password
    secret = {"auths": {registry.host: {"username": registry.username, "password": registry.password}}}
    keyrings = {"team-a": Keyring.from_docker_config(secret, "pull secret team-a/regcred")}
    options = RegistryOptions(host=registry.host, ca_file=str(registry.ca_file), allow_private_network=True)
    policy = Policy(mode="enforce", on_resolution_error="deny", registries=(options,), resolution_timeout=5)
    checker = Checker(RegistryClient([options], network_guard=True))
    metrics = Metrics()
    app = build_app(
        Webhook(lambda: policy, lambda _: checker, pull_secrets=NamespaceSecrets(keyrings)), metrics
    )
    client = app.test_client()

    def admit(namespace: str) -> dict[str, Any]:
        answer = client.post("/validate", json=hostile.review(image, namespace=namespace))
        assert answer.status_code == 200
        response: dict[str, Any] = answer.get_json()["response"]
        return response

    try:
        # Each order: a cached answer for team-a must not admit team-b's Pod, and the reverse.
        outcomes = [
            admit(ns)["allowed"] for ns in ("team-a", "team-b", "team-a", "team-b", "team-b", "team-a")
        ]
        refused = admit("team-b")
    finally:
        checker.close()
    assert outcomes == [True, False, True, False, False, True]
    assert "UNAUTHORIZED" in refused["status"]["message"]
    everything = json.dumps(refused) + metrics.exposition()[0].decode() + caplog.text
    assert registry.password not in everything
    assert base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode() not in everything
