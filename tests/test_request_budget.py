"""The registry requests one admission may make (`registryRequestsPerAdmission`): a registry that answers
at once with ever more documents to fetch (a manifest of thousands of layers) is stopped by a count,
since the deadline alone would let it keep a core busy until it passed."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
import uuid

import httpx
import pytest

from webhook import admission
from webhook.codes import Code
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.engine import Webhook
from webhook.errors import ConfigError, DeadlineExceeded
from webhook.findings import ImageResult
from webhook.policy import DEFAULT_REQUESTS_PER_ADMISSION, Policy, RegistryOptions
from webhook.registry import RegistryClient
from webhook.resolve import Checker

HOST = "registry.example"
LAYERS = 200


def test_a_deadline_refuses_the_request_past_its_count_and_only_that() -> None:
    deadline = Deadline(10, requests=3)
    for _ in range(3):
        assert deadline.spend("manifest request") > 0
    with pytest.raises(DeadlineExceeded, match=r"manifest request not sent: the 3 registry requests allowed"):
        deadline.spend("manifest request")
    assert deadline.check() > 0  # time is left: only the count is spent
    uncounted = Deadline(10)
    for _ in range(10_000):
        uncounted.spend("blob request")


def test_the_policy_reads_the_count_and_refuses_what_is_not_one() -> None:
    assert Policy().requests_per_admission == DEFAULT_REQUESTS_PER_ADMISSION
    assert Policy.from_mapping({"registryRequestsPerAdmission": 50}).requests_per_admission == 50
    for wrong in (0, 2.5, True, "100"):
        with pytest.raises(ConfigError, match="registryRequestsPerAdmission: must be a whole number"):
            Policy.from_mapping({"registryRequestsPerAdmission": wrong})


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [_digest(b"diff %d" % n) for n in range(LAYERS)]},
    }
).encode()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": _digest(b"layer %d" % n),
                "size": 1,
            }
            for n in range(LAYERS)
        ],
    }
).encode()


def _wide_registry(seen: list[httpx.Request]) -> httpx.MockTransport:
    """A registry answering at once: one manifest of LAYERS layers, its config, every layer present."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if "/manifests/" in path:
            headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            headers["Docker-Content-Digest"] = _digest(MANIFEST)
            return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else MANIFEST)
        if path.endswith(_digest(CONFIG)):
            return httpx.Response(200, content=CONFIG, headers={"Docker-Content-Digest": _digest(CONFIG)})
        return httpx.Response(200, headers={"Content-Length": "1"})

    return httpx.MockTransport(answer)


def _admit(policy: Policy, seen: list[httpx.Request]) -> admission.Decision:
    options = RegistryOptions(host=HOST, allow_private_network=True)
    checker = Checker(RegistryClient([options], transport=_wide_registry(seen)))
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "team",
            "object": {"spec": {"containers": [{"name": "app", "image": f"{HOST}/wide/app:v1"}]}},
        },
    }
    try:
        return Webhook(lambda: policy, lambda _: checker).judge(admission.parse_review(review)).decision
    finally:
        checker.close()


def test_an_admission_stops_at_the_policys_count_of_registry_requests() -> None:
    seen: list[httpx.Request] = []
    decision = _admit(Policy(mode="enforce", requests_per_admission=40), seen)
    assert len(seen) == 40
    assert Code.REGISTRY_UNREACHABLE in decision.codes
    assert decision.allowed  # onResolutionError (warn by default) decides, as for a missed deadline


def test_the_finding_names_the_policy_key_that_stopped_it() -> None:
    seen: list[httpx.Request] = []
    options = RegistryOptions(host=HOST, allow_private_network=True)
    checker = Checker(RegistryClient([options], transport=_wide_registry(seen)))
    try:
        [result] = checker.check(
            [f"{HOST}/wide/app:v1"], Policy().targets, Policy(), Keyring.empty(), Deadline(10, requests=40)
        )
    finally:
        checker.close()
    stopped = [f for f in result.findings if "registryRequestsPerAdmission" in f.message]
    assert stopped and {f.code for f in stopped} == {Code.REGISTRY_UNREACHABLE}


def test_within_the_count_every_layer_is_asked_for() -> None:
    seen: list[httpx.Request] = []
    decision = _admit(Policy(mode="enforce", requests_per_admission=LAYERS + 10), seen)
    assert len(seen) == LAYERS + 3  # manifest HEAD and GET, the config, every layer's HEAD
    assert Code.REGISTRY_UNREACHABLE not in decision.codes


def test_an_admission_following_another_lookup_is_not_failed_by_the_others_spent_requests() -> None:
    """One admission spends its requests on purpose while another waits on a lookup it leads: the one
    waiting asks again with its own, instead of taking the other's failure."""
    leader_asking, release = threading.Event(), threading.Event()
    heads = itertools.count()

    def answer(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path and request.method == "HEAD":
            if next(heads) == 0:  # the first admission's HEAD waits until the second one follows it
                leader_asking.set()
                release.wait(10)
            # No Docker-Content-Digest: the lookup needs a GET too, a second request.
            return httpx.Response(200, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        return _wide_registry([]).handle_request(request)

    options = RegistryOptions(host=HOST, allow_private_network=True)
    checker = Checker(RegistryClient([options], transport=httpx.MockTransport(answer)))
    image = f"{HOST}/wide/app:v1"
    spent: list[ImageResult] = []
    leader = threading.Thread(
        target=lambda: spent.extend(
            checker.check([image], Policy().targets, Policy(), Keyring.empty(), Deadline(10, requests=1))
        )
    )
    try:
        leader.start()
        assert leader_asking.wait(10)
        follower = threading.Thread(target=_release_once_followed, args=(checker, release))
        follower.start()
        [result] = checker.check([image], Policy().targets, Policy(), Keyring.empty(), Deadline(10))
        follower.join()
    finally:
        release.set()
        leader.join()
        checker.close()
    assert {f.code for f in spent[0].findings} == {Code.REGISTRY_UNREACHABLE}
    assert result.verdict == "allow", [f.message for f in result.findings]


def _release_once_followed(checker: Checker, release: threading.Event) -> None:
    """Lets the leading lookup go on once a second caller waits on it."""
    flights = checker.resolver._flight._running
    for _ in range(1000):
        if any(flight.followed is not None for flight in list(flights.values())):
            break
        time.sleep(0.01)
    release.set()
