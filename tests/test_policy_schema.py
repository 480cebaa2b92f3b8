"""The chart's values.schema.json and webhook/policy.py describe the same policy, field by field: the same
keys at every level, the same enums and the same limits, and the reader accepts what the schema's limits
accept and refuses what they refuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from webhook import policy as p
from webhook.errors import ConfigError
from webhook.findings import SEVERITIES
from webhook.nodeconfig import PULL, RESOLVE
from webhook.runtimes import KINDS

SCHEMA = json.loads((Path(__file__).parent.parent / "charts/pullcheck/values.schema.json").read_text())
POLICY = SCHEMA["properties"]["policy"]["properties"]
REGISTRY = POLICY["registries"]["items"]["properties"]
MIRROR = REGISTRY["mirrors"]["items"]["anyOf"][1]["properties"]


def definition(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref", "")
    return SCHEMA["definitions"][ref.rsplit("/", 1)[-1]] if ref else node


def test_the_keys_agree_at_every_level() -> None:
    # nodeConfig is the chart's own section: it renders the node files and points the policy at them.
    assert set(POLICY) == p._TOP_KEYS - {"nodeConfig"}
    assert set(REGISTRY) == p._REGISTRY_KEYS
    assert set(MIRROR) == p._MIRROR_KEYS
    assert set(POLICY["exemptions"]["properties"]) == p._EXEMPTION_KEYS
    assert set(POLICY["caches"]["properties"]) == set(p._CACHE_KEYS)
    for section in (POLICY["exemptions"], POLICY["caches"], POLICY["registries"]["items"]):
        assert section["additionalProperties"] is False


def test_the_enums_agree() -> None:
    assert tuple(POLICY["mode"]["enum"]) == p.MODES
    assert tuple(POLICY["onResolutionError"]["enum"]) == p.RESOLUTION_OUTCOMES
    assert tuple(SCHEMA["definitions"]["severity"]["enum"]) == SEVERITIES
    assert set(MIRROR["capabilities"]["items"]["enum"]) == {PULL, RESOLVE}
    pattern = POLICY["targets"]["items"]["properties"]["runtime"]["pattern"]
    assert pattern == f"^({'|'.join(KINDS)})://"


def test_the_limits_agree() -> None:
    timeout = POLICY["resolutionTimeoutSeconds"]
    assert (timeout["type"], timeout["exclusiveMinimum"], timeout["maximum"]) == (
        "number",
        0,
        p.MAX_RESOLUTION_TIMEOUT,
    )
    assert POLICY["auditIntervalSeconds"]["anyOf"] == [
        {"const": 0},
        {"type": "number", "minimum": p.MIN_AUDIT_INTERVAL},
    ]
    cache = definition(POLICY["caches"]["properties"]["documentsMiB"])
    assert (cache["type"], cache["exclusiveMinimum"], cache["maximum"]) == ("number", 0, p.MAX_CACHE_MIB)
    for key, maximum in (
        ("connectionsPerRegistry", p.MAX_CONNECTIONS_PER_REGISTRY),
        ("registryRequestsPerAdmission", p.MAX_REQUESTS_PER_ADMISSION),
    ):
        whole = POLICY[key]
        assert (whole["type"], whole["minimum"], whole["maximum"]) == ("integer", 1, maximum)


def accepts(data: dict[str, Any]) -> bool:
    try:
        p.Policy.from_mapping(data)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize(
    ("key", "inside", "outside"),
    [
        ("resolutionTimeoutSeconds", p.MAX_RESOLUTION_TIMEOUT, p.MAX_RESOLUTION_TIMEOUT + 0.5),
        ("resolutionTimeoutSeconds", 0.1, 0),
        ("auditIntervalSeconds", p.MIN_AUDIT_INTERVAL, p.MIN_AUDIT_INTERVAL - 1),
        ("connectionsPerRegistry", p.MAX_CONNECTIONS_PER_REGISTRY, p.MAX_CONNECTIONS_PER_REGISTRY + 1),
        ("connectionsPerRegistry", 1, 0),
        ("registryRequestsPerAdmission", p.MAX_REQUESTS_PER_ADMISSION, p.MAX_REQUESTS_PER_ADMISSION + 1),
        ("registryRequestsPerAdmission", 1, 0),
        ("caches", {"documentsMiB": p.MAX_CACHE_MIB}, {"documentsMiB": p.MAX_CACHE_MIB + 1}),
        ("mode", p.MODES[-1], "Enforce"),
        ("onResolutionError", p.RESOLUTION_OUTCOMES[-1], "info"),
    ],
)
def test_the_reader_keeps_the_limits_it_shares_with_the_schema(key: str, inside: Any, outside: Any) -> None:
    assert accepts({key: inside})
    assert not accepts({key: outside})
