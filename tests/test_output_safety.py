"""Text from registries and Pod specs reaches no output raw, and a password in an image name reaches none.

A hostile registry chooses layer media types, `artifactType` and Content-Type; a Pod names any image.
Every output is read for characters that are not printable (ESC, CR, LF, C1 controls, bidi overrides):
status.message, warnings, audit annotations, the admission log, the `check` table, the audit table and
CSV, PolicyReports and the metrics. The escaped form stays readable (`\\x1b`), so nothing is hidden.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import hostile
from tests.harness.hostile import HostileServer
from tests.harness.serving import local_registries, write_policy
from webhook import admission, render, reports
from webhook.app import Settings, create_app
from webhook.auditreport import AuditReport, ImageAudit
from webhook.cli import main
from webhook.codes import Code
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.digests import digest_of
from webhook.findings import DENY, WARN, Finding, ImageResult
from webhook.kube.policyreport import report_bodies
from webhook.logs import JsonFormatter
from webhook.metrics import Metrics
from webhook.placement import static_groups
from webhook.policy import Mode, Policy
from webhook.resolve import Checker
from webhook.runtimes import default_targets
from webhook.text import printable
from webhook.workloads import Workload

# Set the terminal title, clear the screen, forge a line, reverse the text, and C1's CSI.
HOSTILE = "\x1b]0;owned\x07\x1b[2J\r\nforged: line\u202e\x9b31m"
PASSWORD = "s3cr3t-pw"
WITH_PASSWORD = f"robot:{PASSWORD}@registry.example/team/app:1"


def raw_characters(value: Any) -> set[str]:
    """The characters of every string in `value` (JSON-like, nested) that a terminal would act on."""
    if isinstance(value, str):
        return {c for c in value if not c.isprintable()}
    if isinstance(value, dict):
        return raw_characters(list(value)) | raw_characters(list(value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(raw_characters(v) for v in value)) if value else set()
    return set()


def test_printable_escapes_what_terminals_act_on_and_keeps_the_rest() -> None:
    assert printable("docker.io/library/nginx:1.27 é ü 日本") == "docker.io/library/nginx:1.27 é ü 日本"
    shown = printable(HOSTILE)
    assert shown == "\\x1b]0;owned\\x07\\x1b[2J\\r\\nforged: line\\u202e\\x9b31m"
    assert not raw_characters(shown) and printable(shown) == shown
    assert printable("a\u2028b\u200bc\x7f\ud800") == "a\\u2028b\\u200bc\\x7f\\ud800"


# ---- the webhook's answers, built from hostile results --------------------------------------------------

TARGET = default_targets()[0]


def hostile_results() -> list[ImageResult]:
    finding = Finding(
        Code.UNSUPPORTED_LAYER, DENY, str(TARGET.runtime), str(TARGET.platform), f"layer type {HOSTILE}"
    )
    warning = Finding(Code.ENCRYPTED_LAYER, WARN, "", "", f"layer is encrypted ({HOSTILE})")
    return [
        ImageResult(f"registry.example/app{HOSTILE}:1", None, findings=(finding,)),
        ImageResult(f"registry.example/other:1{HOSTILE}", None, findings=(warning,)),
    ]


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_no_response_field_carries_raw_registry_or_pod_text(mode: Mode) -> None:
    decision = admission.decide(hostile_results(), static_groups([TARGET]), mode)
    answer = admission.response("admission.k8s.io/v1", "uid", decision)
    assert not raw_characters(answer)
    decoded = json.loads(decision.audit_annotations["images"])
    assert not raw_characters(decoded)
    assert "\\x1b]0;owned" in json.dumps(answer)  # escaped, still there to read


def test_a_control_character_in_an_image_name_still_gives_a_warning_the_apiserver_keeps() -> None:
    """k8s.io/apimachinery's NewWarningHeader refuses text with a control character: the warning was lost."""
    image = "registry.example/app:1\x07"
    result = ImageResult(image, None, findings=(Finding(Code.ENCRYPTED_LAYER, WARN, "", "", "encrypted"),))
    decision = admission.decide([result], static_groups([TARGET]), "warn")
    [warning] = decision.warnings
    assert warning.startswith("registry.example/app:1\\x07: ENCRYPTED_LAYER warns")
    assert warning.isprintable() and len(warning) <= admission.WARNING_LENGTH


# ---- a hostile registry, through the real client and checker ---------------------------------------------


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile_server = HostileServer()
    yield hostile_server
    hostile_server.close()


def _manifest(
    layer_type: str, config_type: str = "application/vnd.oci.image.config.v1+json", **extra: Any
) -> tuple[bytes, bytes]:
    config = json.dumps(
        {
            "os": "linux",
            "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "2" * 64]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": hostile.OCI_MANIFEST,
        "config": {
            "mediaType": config_type,
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": [{"mediaType": layer_type, "digest": "sha256:" + "1" * 64, "size": 1}],
        **extra,
    }
    return json.dumps(manifest).encode(), config


def hostile_images(server: HostileServer) -> list[str]:
    """Images whose findings quote what the registry chose: a layer type, an artifactType, a Content-Type."""
    layers, config = _manifest("application/x-evil" + HOSTILE)
    artifact, _ = _manifest(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        f"application/vnd.evil.config{HOSTILE}",
        artifactType=HOSTILE,
    )
    for name, body, content_type in [
        ("layers", layers, hostile.OCI_MANIFEST),
        ("artifact", artifact, hostile.OCI_MANIFEST),
        # http.server writes headers as latin-1 and h11 lets bytes over 0x7f through: a C1 CSI arrives.
        ("typed", layers, "application/vnd.evil\x9b31m\xad"),
    ]:
        server.route(f"/v2/{name}/app/manifests/", hostile.document(body, content_type))
        server.route(
            f"/v2/{name}/app/blobs/", hostile.document(config, "application/octet-stream", digest=None)
        )
    return [f"{server.host}/{name}/app:v1" for name in ("layers", "artifact", "typed")]


def _policy(tmp_path: Path, server: HostileServer, mode: str) -> Path:
    return write_policy(tmp_path / f"{mode}.yaml", local_registries([server.host]), mode=mode)


@pytest.mark.served
@pytest.mark.parametrize("mode", ["enforce", "warn"])
def test_registry_chosen_text_is_escaped_in_every_answer_and_log_line(
    tmp_path: Path, server: HostileServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    images = hostile_images(server)
    client = create_app(Settings(policy_file=str(_policy(tmp_path, server, mode)))).test_client()
    with caplog.at_level(logging.INFO, logger="pullcheck.admission"):
        reply = client.post("/validate", json=hostile.review(*images, f"{server.host}/pod{HOSTILE}:1"))
    response = reply.json["response"]  # type: ignore[index]
    judged = json.loads(response["auditAnnotations"]["images"])
    assert {entry["image"].split("/")[1] for entry in judged} >= {"layers", "artifact", "typed"}
    codes = {code for entry in judged for code in entry["findings"]}
    assert {"UNSUPPORTED_LAYER", "NOT_AN_IMAGE", "MEDIA_TYPE_MISMATCH", "INVALID_REFERENCE"} <= codes
    if mode == "enforce":
        message = response["status"]["message"]
        assert "application/x-evil\\x1b]0;owned\\x07" in message and "artifact of type \\x1b]0;" in message
        assert "application/vnd.evil\\x9b31m\\xad" in message
    else:
        assert len(response["warnings"]) >= 4
    assert not raw_characters(response) and not raw_characters(judged)
    [record] = [r for r in caplog.records if r.name == "pullcheck.admission"]
    line = JsonFormatter().format(record)
    assert (
        not raw_characters(line) and f"{server.host}/pod{printable(HOSTILE)}:1" in json.loads(line)["images"]
    )


def test_a_refused_review_quotes_the_request_escaped(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", [])
    client = create_app(Settings(policy_file=str(policy))).test_client()
    body = hostile.review("nginx:1")
    body["request"]["kind"]["kind"] = f"Config{HOSTILE}"
    answer = client.post("/validate", json=body)
    assert answer.status_code == 400
    text = answer.get_data(as_text=True)
    assert (
        text.endswith("\n") and not raw_characters(text[:-1]) and f"kind Config{printable(HOSTILE)}" in text
    )


@pytest.mark.parametrize("text", [HOSTILE, "a\x7fb", "a\u202eb", "é\x9b", "a\x1bb", "a\\x1b"])
def test_a_log_line_escapes_its_message_fields_and_error(text: str) -> None:
    """orjson writes DEL, C1 controls and bidi overrides as they are: the formatter escapes every string."""
    try:
        raise KeyError(text)
    except KeyError as error:
        record = logging.LogRecord("pullcheck.x", logging.ERROR, __file__, 1, "judging %s", (text,), None)
        record.exc_info = (KeyError, error, None)
    record.fields = {"images": [text], text: {"nested": text}}  # type: ignore[attr-defined]
    line = JsonFormatter().format(record)
    assert not raw_characters(line)
    entry = json.loads(line)
    assert not raw_characters(entry) and entry["images"] == [printable(text)]
    assert entry["message"] == f"judging {printable(text)}" and entry[printable(text)] == {
        "nested": printable(text)
    }


@pytest.mark.served
def test_registry_chosen_text_is_escaped_in_the_check_table(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    images = hostile_images(server)
    status = main(["check", "--config", str(_policy(tmp_path, server, "enforce")), *images])
    out = capsys.readouterr().out
    assert status == 1 and out.count("\n") == len(images) + 2  # a header, a line per image, a summary
    assert not raw_characters(out.replace("\n", ""))
    assert "application/x-evil\\x1b]0;owned\\x07" in out


def test_an_error_line_of_the_command_line_is_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--config", str(tmp_path / f"policy{HOSTILE}.yaml"), "nginx:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not raw_characters(err[:-1]) and printable(HOSTILE) in err


def test_audit_table_csv_junit_policy_reports_and_metrics_are_escaped() -> None:
    workload = Workload("team-a", "Deployment", "web", (), {}, "apps/v1", "uid-1")
    report = AuditReport(tuple(ImageAudit(r, (workload,)) for r in hostile_results()), (f"x{HOSTILE}",), 1, 2)
    for text in (render.audit_to_table(report), render.audit_to_csv(report)):
        assert not raw_characters(text.replace("\n", "")), text
        assert text.count("\n") == len(text.splitlines()) - 1
    assert not raw_characters(report_bodies(report, now=0))
    junit = ET.fromstring(reports.to_junit(report))  # XML 1.0 cannot carry a raw ESC at all
    texts = [(e.text or "").strip() for e in junit.iter()] + [
        v for e in junit.iter() for v in e.attrib.values()
    ]
    assert not raw_characters(texts) and any("\\x1b]0;owned" in t for t in texts)
    metrics = Metrics()
    metrics.observe_audit(report)
    exposition = metrics.exposition()[0].decode()
    assert "pullcheck_audit_findings" in exposition or "workload" in exposition
    assert not raw_characters(exposition.replace("\n", ""))


# ---- a password in an image name ---------------------------------------------------------------------


def test_a_password_in_an_image_name_reaches_no_answer_log_table_or_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    policy = write_policy(tmp_path / "p.yaml", [], mode="enforce")
    client = create_app(Settings(policy_file=str(policy))).test_client()
    with caplog.at_level(logging.INFO, logger="pullcheck.admission"):
        enforce = client.post("/validate", json=hostile.review(WITH_PASSWORD)).json
    assert enforce["response"]["allowed"] is False  # type: ignore[index]
    assert "robot:" not in json.dumps(enforce) and "***@registry.example/team/app:1" in json.dumps(enforce)
    [record] = [r for r in caplog.records if r.name == "pullcheck.admission"]
    assert record.fields["images"] == ["***@registry.example/team/app:1"]  # type: ignore[attr-defined]

    for output in ("table", "json"):
        assert main(["check", "--output", output, WITH_PASSWORD]) == 1
        out = capsys.readouterr().out
        assert PASSWORD not in out and "***@registry.example/team/app:1" in out

    checker = Checker(RegistryClientNeverCalled())
    [result] = checker.check([WITH_PASSWORD], [TARGET], Policy(), Keyring.empty(), Deadline(1))
    workload = Workload("team-a", "Deployment", "web", (WITH_PASSWORD,), {}, "apps/v1", "uid-1")
    report = AuditReport((ImageAudit(result, (workload,)),), (), 1, 1)
    texts = [
        json.dumps(report_bodies(report, now=0)),
        render.audit_to_table(report),
        render.audit_to_csv(report),
    ]
    metrics = Metrics()
    metrics.observe_audit(report)
    texts.append(metrics.exposition()[0].decode())
    assert all(PASSWORD not in text for text in texts) and all("***@" in text for text in texts)
    records = [r for r in caplog.records if PASSWORD in r.getMessage() or PASSWORD in str(vars(r))]
    assert records == []


class RegistryClientNeverCalled:
    """An image with user-info never parses, so the registry is never asked."""

    def __getattr__(self, name: str) -> Any:
        if name == "close":
            return lambda: None
        raise AssertionError(f"the registry was asked ({name})")
