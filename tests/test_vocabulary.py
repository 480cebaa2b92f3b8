"""The typed words: finding codes and severities serialise as their values, the error tree is documented."""

from __future__ import annotations

import inspect
import json
import re

import orjson

from webhook import errors
from webhook.codes import Code, Severity
from webhook.findings import CODES, DEFAULT_SEVERITY, REMEDY, Finding


def test_codes_and_severities_serialise_as_their_values() -> None:
    finding = Finding(Code.SCHEMA1, Severity.DENY, "containerd://2.1.3", "linux/amd64", "schema 1")
    plain = {
        "code": "SCHEMA1",
        "severity": "deny",
        "runtime": "containerd://2.1.3",
        "platform": "linux/amd64",
        "message": "schema 1",
    }
    assert json.dumps(finding.to_json()) == json.dumps(plain)
    assert orjson.dumps(finding.to_json()) == orjson.dumps(plain)
    assert f"{Code.SCHEMA1}: {Severity.WARN}" == "SCHEMA1: warn"


def test_every_finding_code_has_a_default_severity_and_a_remedy() -> None:
    assert set(DEFAULT_SEVERITY) == set(REMEDY) == CODES == set(Code) - {Code.INTERNAL_ERROR}


def test_the_error_tree_docstring_names_every_error_class() -> None:
    doc = errors.__doc__ or ""
    listed = set(re.findall(r"^    [\s│├└─]*(\w+)", doc, re.MULTILINE))
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.PullcheckError)
    }
    assert listed == defined
