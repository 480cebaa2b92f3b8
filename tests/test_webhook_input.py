"""Whatever a client posts, the webhook answers a well-formed AdmissionReview or a short 400/413, never
a 500 or a traceback; and the reference parser gives back, on a second parse, what it accepted.

The app is the real one over the real resolver; its registry client talks to an in-memory transport
that answers 404, so arbitrary image strings never reach a network.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.app import build_app
from webhook.engine import Webhook
from webhook.errors import InvalidReference
from webhook.metrics import Metrics
from webhook.policy import Policy
from webhook.reference import parse
from webhook.registry import RegistryClient
from webhook.resolve import Checker

KINDS = ["Pod", "Deployment", "CronJob", "Job", "Secret", "", 7, None]
OPERATIONS = ["CREATE", "UPDATE", "DELETE", "CONNECT", "", None, ["CREATE"]]

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
image_text = (
    st.text(max_size=80)
    | st.from_regex(r"[a-z0-9.:/@_-]{1,60}", fullmatch=True)
    | st.sampled_from(["nginx", "127.0.0.1:5000/a:b", "a@sha256:" + "0" * 64, "\x00", "é/ü:1", "A/B"])
)
container = st.fixed_dictionaries({"name": st.text(max_size=8)}, optional={"image": image_text | json_value})
pod_spec = st.fixed_dictionaries(
    {},
    optional={
        "containers": st.lists(container, max_size=4) | json_value,
        "initContainers": st.lists(container, max_size=2) | json_value,
        "nodeSelector": st.dictionaries(st.text(max_size=20), st.text(max_size=10) | json_value, max_size=3),
        "affinity": json_value,
        "imagePullSecrets": json_value,
    },
)


def _object(kind: Any, spec: Any) -> Any:
    if kind == "Pod":
        return {"metadata": {"name": "p"}, "spec": spec}
    if kind == "CronJob":
        return {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}
    return {"spec": {"template": {"spec": spec}}}


@st.composite
def reviews(draw: st.DrawFn) -> Any:
    """AdmissionReviews, mostly well-formed, with any part possibly replaced by junk."""
    kind = draw(st.sampled_from(KINDS))
    request = {
        "uid": draw(st.uuids().map(str) | json_value),
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": draw(st.sampled_from(OPERATIONS)),
        "namespace": draw(st.text(max_size=12) | json_value),
        "object": _object(kind, draw(pod_spec | json_value)),
        "oldObject": draw(st.none() | st.just(_object(kind, draw(pod_spec)))),
        "dryRun": draw(json_value),
    }
    for key in draw(st.lists(st.sampled_from(sorted(request)), max_size=2)):
        request[key] = draw(json_value)
    review = {
        "apiVersion": draw(st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1", "v1"])),
        "kind": "AdmissionReview",
        "request": request,
    }
    return draw(st.just(review) | json_value)


@pytest.fixture(scope="module")
def client() -> Any:
    checker = Checker(RegistryClient(transport=httpx.MockTransport(lambda _: httpx.Response(404))))
    policy = Policy(mode="enforce", resolution_timeout=2)
    app = build_app(Webhook(lambda: policy, lambda _: checker), Metrics(), max_body_bytes=256 * 1024)
    yield app.test_client()
    checker.close()


def _well_formed(answer: Any, body: Any) -> None:
    if answer.status_code in (400, 413):
        text = answer.get_data(as_text=True)
        assert text.count("\n") == 1 and "Traceback" not in text
        return
    assert answer.status_code == 200, answer.get_data(as_text=True)
    document = answer.get_json()
    assert document["kind"] == "AdmissionReview" and document["apiVersion"] == body["apiVersion"]
    response = document["response"]
    assert response["uid"] == body["request"]["uid"] and isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["code"] == 403 and response["status"]["message"]
    assert all(isinstance(w, str) and len(w) <= 120 for w in response.get("warnings", []))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=reviews())
def test_any_review_gets_an_answer_or_a_400(client: Any, body: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pullcheck.admission")
    answer = client.post("/validate", data=json.dumps(body), content_type="application/json")
    _well_formed(answer, body)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # nothing fell to the fallback


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_get_a_400_not_a_500(client: Any, data: bytes) -> None:
    answer = client.post("/validate", data=data, content_type="application/json")
    assert answer.status_code in (200, 400)
    if answer.status_code == 200:  # hypothesis found a valid review: fine, if it is answered well
        _well_formed(answer, json.loads(data))


def test_deeply_nested_and_oversized_bodies(client: Any) -> None:
    assert client.post("/validate", data=b"[" * 100_000 + b"]" * 100_000).status_code in (400, 413)
    assert client.post("/validate", data=b"[" * 50_000 + b"]" * 50_000).status_code == 400
    assert client.post("/validate", data=b" " * (256 * 1024 + 1)).status_code == 413


@given(image_text)
def test_the_parser_round_trips_what_it_accepts(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReference as error:
        assert "\n" not in str(error)
        return
    again = parse(str(ref))  # the normalised form: no longer a short name, otherwise the same
    fields = ("registry", "repository", "tag", "digest")
    assert [getattr(again, f) for f in fields] == [getattr(ref, f) for f in fields]
    assert str(again) == str(ref) and not again.unqualified
