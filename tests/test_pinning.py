"""Pinning: the JSONPatch /mutate answers, what it pins and what it leaves, and the shared caches."""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.harness.images import make_layer
from tests.harness.registry import Registry
from tests.test_app import SCHEMA1, UID, Nodes, make_client, policy_for, real_app, review
from webhook import pinning
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.findings import ImageResult
from webhook.placement import NodeGroup
from webhook.podspec import POD_SPEC_PATHS
from webhook.policy import Exemptions, Policy
from webhook.runtimes import Target, parse_target

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
ARM = parse_target("cri-o://1.33.2", "linux/arm64")


def result(image: str, digest: str | None = DIGEST, findings: tuple[Any, ...] = ()) -> ImageResult:
    return ImageResult(image, image, digest=digest, findings=findings)


# --- the pure part ------------------------------------------------------------------------------------


def test_pointer_escapes_tilde_before_slash() -> None:
    assert pinning.pointer("spec", "containers", 0, "image") == "/spec/containers/0/image"
    # '~' first: escaping '/' first would turn 'a/b' into 'a~1b' and then into 'a~01b'.
    assert pinning.pointer("a/b", "c~d", "~1") == "/a~1b/c~0d/~01"
    assert pinning.pointer() == ""


def test_pins_leave_denied_unresolved_and_digested_images() -> None:
    digested = f"registry.example/app:1@{OTHER}"
    pinned = pinning.pins(
        [
            result("registry.example/app:1.2"),
            result("nginx"),
            result("registry.example/old:1", findings=SCHEMA1),
            result("registry.example/gone:1", digest=None),
            result(digested),
            result("Not A Reference"),
        ]
    )
    assert pinned == {
        "registry.example/app:1.2": f"registry.example/app:1.2@{DIGEST}",
        "nginx": f"nginx@{DIGEST}",
    }


@pytest.mark.parametrize("kind", sorted(POD_SPEC_PATHS))
def test_patch_reaches_the_pod_spec_of_every_kind(kind: str) -> None:
    spec = {"containers": [{"name": "app", "image": "app:1"}]}
    operations = pinning.patch(kind, spec, {"app:1": f"app:1@{DIGEST}"})
    path = "/" + "/".join((*POD_SPEC_PATHS[kind], "containers", "0", "image"))
    assert operations == [{"op": "replace", "path": path, "value": f"app:1@{DIGEST}"}]


def test_patch_covers_init_and_ephemeral_containers_and_repeats() -> None:
    spec = {
        "initContainers": [{"name": "setup", "image": "tools:1"}],
        "containers": [
            {"name": "app", "image": "app:1"},
            {"name": "pinned", "image": f"app:1@{OTHER}"},
            {"name": "again", "image": "app:1"},
            {"name": "template-without-image"},
        ],
        "ephemeralContainers": [{"name": "debug", "image": "tools:1"}],
    }
    pinned = {"tools:1": f"tools:1@{DIGEST}", "app:1": f"app:1@{OTHER}"}
    assert [(op["path"], op["value"]) for op in pinning.patch("Pod", spec, pinned)] == [
        ("/spec/initContainers/0/image", f"tools:1@{DIGEST}"),
        ("/spec/containers/0/image", f"app:1@{OTHER}"),
        ("/spec/containers/2/image", f"app:1@{OTHER}"),
        ("/spec/ephemeralContainers/0/image", f"tools:1@{DIGEST}"),
    ]


def test_mutation_response_carries_a_base64_json_patch_only_when_there_is_one() -> None:
    operations = [{"op": "replace", "path": "/spec/containers/0/image", "value": f"app:1@{DIGEST}"}]
    answer = pinning.mutation_response("admission.k8s.io/v1beta1", UID, operations)
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == UID and response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == operations
    assert pinning.mutation_response("admission.k8s.io/v1", UID, [])["response"] == {
        "uid": UID,
        "allowed": True,
    }


def test_pin_object_copies_objects_and_lists_and_leaves_others_alone() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    }
    before = copy.deepcopy(deployment)
    pinned = {"app:1": f"app:1@{DIGEST}"}
    out = pinning.pin_object(deployment, pinned)
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == f"app:1@{DIGEST}"
    assert deployment == before
    pod_list = {"kind": "PodList", "items": [{"spec": {"containers": [{"name": "a", "image": "app:1"}]}}]}
    assert pinning.pin_object(pod_list, pinned)["items"][0]["spec"]["containers"][0]["image"].endswith(DIGEST)
    config_map = {"kind": "ConfigMap", "data": {"image": "app:1"}}
    assert pinning.pin_object(config_map, pinned) is config_map
    assert pinning.pin_object(deployment, {"other:1": "other:1@" + DIGEST}) is deployment


# --- /mutate with a checker of the tests' own --------------------------------------------------------


class DigestChecker:
    """Answers every image with a fixed digest (none for `gone` images), and remembers what it was asked."""

    def __init__(self, findings: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        self.findings = findings or {}
        self.error = error
        self.asked: list[tuple[list[str], list[Target]]] = []

    def check(
        self,
        images: Sequence[str],
        targets: Sequence[Target],
        policy: Policy,
        keyring: Keyring,
        deadline: Deadline,
    ) -> list[ImageResult]:
        self.asked.append((list(images), list(targets)))
        if self.error is not None:
            raise self.error
        return [
            result(i, None if "gone" in i else DIGEST, policy.apply(self.findings.get(i, ()))) for i in images
        ]


def mutate(client: Any, body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    response = client.post("/mutate", json=body)
    assert response.status_code == 200, response.data
    answer: dict[str, Any] = response.json["response"]
    operations = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
    return answer, operations


PIN = Policy(pin_digests=True)


def test_off_by_default_mutate_allows_without_patch_and_judges_nothing() -> None:
    checker = DigestChecker()
    client, _ = make_client(checker)  # type: ignore[arg-type]
    answer, _ = mutate(client, review("app:1"))
    assert answer == {"uid": UID, "allowed": True}
    assert checker.asked == []


def test_on_pins_judged_images_and_skips_digested_exempt_denied_and_unresolved() -> None:
    checker = DigestChecker(findings={"old:1": SCHEMA1})
    policy = Policy(pin_digests=True, mode="enforce", exemptions=Exemptions(images=("legacy/*",)))
    client, _ = make_client(checker, policy)  # type: ignore[arg-type]
    body = review("app:1", f"app:2@{OTHER}", "legacy/thing:1", "old:1", "gone:1", "app:1", kind="Deployment")
    answer, operations = mutate(client, body)
    assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"
    assert operations == [
        {"op": "replace", "path": f"/spec/template/spec/containers/{i}/image", "value": f"app:1@{DIGEST}"}
        for i in (0, 5)
    ]
    assert checker.asked[0][0] == ["app:1", "old:1", "gone:1"]


def test_exempt_namespace_is_not_pinned() -> None:
    checker = DigestChecker()
    client, _ = make_client(checker, Policy(pin_digests=True, exemptions=Exemptions(namespaces=("team-*",))))  # type: ignore[arg-type]
    assert mutate(client, review("app:1"))[1] == []
    assert checker.asked == []


def test_update_pins_only_the_images_it_changes() -> None:
    checker = DigestChecker()
    client, _ = make_client(checker, PIN)  # type: ignore[arg-type]
    body = review("app:1", "app:2")
    body["request"]["operation"] = "UPDATE"
    body["request"]["oldObject"] = review("app:1")["request"]["object"]
    _, operations = mutate(client, body)
    assert operations == [{"op": "replace", "path": "/spec/containers/1/image", "value": f"app:2@{DIGEST}"}]


def test_ephemeral_containers_subresource_is_pinned() -> None:
    checker = DigestChecker()
    client, _ = make_client(checker, PIN)  # type: ignore[arg-type]
    body = review("app:1")
    old = copy.deepcopy(body["request"]["object"])
    body["request"]["object"]["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1.36"}]
    body["request"].update(operation="UPDATE", subResource="ephemeralcontainers", oldObject=old)
    _, operations = mutate(client, body)
    assert operations == [
        {"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": f"busybox:1.36@{DIGEST}"}
    ]


def test_pinning_judges_on_the_targets_the_pod_may_land_on() -> None:
    checker = DigestChecker()
    amd = parse_target("containerd://2.1.3", "linux/amd64")
    nodes = Nodes(
        [
            NodeGroup(amd, 3, {"kubernetes.io/arch": "amd64"}),
            NodeGroup(ARM, 2, {"kubernetes.io/arch": "arm64"}),
        ]
    )
    client, _ = make_client(checker, PIN, nodes=nodes)  # type: ignore[arg-type]
    mutate(client, review("app:1", nodeSelector={"kubernetes.io/arch": "arm64"}))
    assert checker.asked[0][1] == [ARM]


def test_a_failure_while_pinning_admits_unpinned() -> None:
    client, _ = make_client(DigestChecker(error=RuntimeError("bug")), PIN)  # type: ignore[arg-type]
    answer, operations = mutate(client, review("app:1"))
    assert answer == {"uid": UID, "allowed": True} and operations == []


def test_mutate_refuses_what_is_not_an_admission_review() -> None:
    client, _ = make_client(DigestChecker(), PIN)  # type: ignore[arg-type]
    response = client.post("/mutate", data=b"{")
    assert response.status_code == 400 and b"not JSON" in response.data


# --- the real checker against the real registry ------------------------------------------------------


def _registry_requests(registry: Registry, repository: str, since: int) -> list[str]:
    lines = registry.log_file.read_bytes()[since:].decode(errors="replace").splitlines()
    # The registry's access log: one `"METHOD /v2/<repository>/… HTTP/1.1"` line per request.
    return [line for line in lines if re.search(rf'"(GET|HEAD) /v2/{re.escape(repository)}/', line)]


@pytest.mark.registry
def test_validation_after_mutation_asks_the_registry_nothing(tmp_path: Path, registry: Registry) -> None:
    repository = "pinning/shared-cache"
    registry.push_image(repository, "1.0", [make_layer("shared cache")])
    image = registry.ref(repository, "1.0")
    client = real_app(
        policy_for(tmp_path / "p.yaml", registry, mode="enforce", pinDigests=True)
    ).test_client()
    before = registry.log_file.stat().st_size
    answer, operations = mutate(client, review(image))
    digest = operations[0]["value"].rpartition("@")[2]
    assert answer["allowed"] is True and operations[0]["value"] == f"{image}@{digest}"
    asked_by_mutation = _registry_requests(registry, repository, before)
    assert asked_by_mutation, "the mutation resolved the image at the registry"

    after_mutation = registry.log_file.stat().st_size
    validated = client.post("/validate", json=review(f"{image}@{digest}")).json["response"]
    assert validated == {"uid": UID, "allowed": True}
    assert _registry_requests(registry, repository, after_mutation) == []
