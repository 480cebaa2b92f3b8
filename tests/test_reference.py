"""Image references: upstream distribution/reference tables, upstream's own answers, and properties.

The tables under tests/data/reference/ are ported row for row from github.com/distribution/reference
v0.6.0 (the parser containerd, CRI-O and the kubelet use); oracle.json holds what that library itself
answers for every table input and for a sample of generated strings.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import webhook.errors
from webhook.reference import (
    HOST_MAX,
    PATH_MAX,
    TEXT_MAX,
    ImageReference,
    InvalidReference,
    StrictReference,
    parse,
    parse_strict,
)

DATA = Path(__file__).parent / "data" / "reference"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


REFERENCE_TEST = _load("reference_test")
NORMALIZE_TEST = _load("normalize_test")
REGEXP_TEST = _load("regexp_test")
ORACLE = _load("oracle")["results"]

# Upstream error text -> what our message says for the same reason (first match wins; "" = any reason).
REASONS: list[tuple[str, tuple[str, ...]]] = [
    ("at least one component", ("at least one component", "is empty")),
    ("must be lowercase", ("must be lowercase",)),
    ("not be more than 255 characters", ("not be more than 255 characters",)),
    ("invalid checksum digest length", ("hex characters, got",)),
    ("invalid checksum digest format", ("lower-case", "malformed")),
    ("unsupported digest algorithm", ("unsupported digest algorithm",)),
    ("64-byte hexadecimal", ("image ID",)),
    ("invalid reference format", ("",)),
]


def _ids(rows: list[Any], key: str | None = None) -> list[str]:
    return [f"{i}:{(row[key] if key else row)[:50]!r}" for i, row in enumerate(rows)]


def assert_rejected(
    call: Callable[[str], object], text: str, upstream_error: str = "invalid reference format"
) -> str:
    with pytest.raises(InvalidReference) as info:
        call(text)
    message = str(info.value)
    assert message.startswith("invalid reference ")
    assert "\n" not in message
    expected = next(ours for theirs, ours in REASONS if theirs in upstream_error)
    assert any(fragment in message for fragment in expected), (upstream_error, message)
    return message


def docker_ref_form(ref: ImageReference) -> str:
    """upstream ParseDockerRef's string: like ours, but a digest drops the tag."""
    return f"{ref.name}@{ref.digest}" if ref.digest else str(ref)


def assert_same_as_parse_strict(ref: ImageReference, strict: StrictReference) -> None:
    """`ref` (from parse) names what `strict` (canonical text) names, with TagNameOnly's default tag."""
    assert (ref.registry, ref.repository, ref.digest) == (strict.domain, strict.path, strict.digest)
    assert ref.tag == (strict.tag if strict.tag or strict.digest else "latest")


# --- reference_test.go ------------------------------------------------------------------------------

PARSE_ROWS = REFERENCE_TEST["TestReferenceParse"]


@pytest.mark.parametrize("row", PARSE_ROWS, ids=_ids(PARSE_ROWS, "input"))
def test_reference_parse(row: dict[str, Any]) -> None:
    if row["err"]:
        assert_rejected(parse_strict, row["input"], row["err"])
        return
    ref = parse_strict(row["input"])
    assert str(ref) == row["input"]
    assert ref.name == row["repository"]
    assert ref.domain == row["domain"]
    assert ref.tag == (row["tag"] or None)
    assert ref.digest == (row["digest"] or None)


WITH_NAME_FAILURE_ROWS = REFERENCE_TEST["TestWithNameFailure"]


@pytest.mark.parametrize("row", WITH_NAME_FAILURE_ROWS, ids=_ids(WITH_NAME_FAILURE_ROWS, "input"))
def test_with_name_failure(row: dict[str, Any]) -> None:
    """WithName takes a bare name: these rows are refused, or carry a tag or digest (not a bare name)."""
    try:
        ref = parse_strict(row["input"])
    except InvalidReference:
        if "more than 255" in row["err"]:
            assert_rejected(parse_strict, row["input"], row["err"])
        return
    assert row["err"] == "invalid reference format"
    assert ref.tag is not None or ref.digest is not None


DOMAIN_AND_PATH_ROWS = REFERENCE_TEST["TestDomainAndPath"]


@pytest.mark.parametrize("row", DOMAIN_AND_PATH_ROWS, ids=_ids(DOMAIN_AND_PATH_ROWS, "input"))
def test_domain_and_path(row: dict[str, Any]) -> None:
    ref = parse_strict(row["input"])
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (row["domain"], row["path"], None, None)


SERIALIZATION_ROWS = REFERENCE_TEST["TestSerialization"]


@pytest.mark.parametrize("row", SERIALIZATION_ROWS, ids=_ids(SERIALIZATION_ROWS, "description"))
def test_serialization(row: dict[str, Any]) -> None:
    """Upstream round-trips these through JSON text fields; here the text is parsed and printed back."""
    if row["err"]:
        assert_rejected(parse_strict, row["input"], row["err"])
        return
    ref = parse_strict(row["input"])
    assert (ref.name, ref.tag, ref.digest) == (row["name"], row["tag"] or None, row["digest"] or None)
    assert str(ref) == row["input"]


BUILDER_ROWS = REFERENCE_TEST["TestWithTag"] + REFERENCE_TEST["TestWithDigest"]


@pytest.mark.parametrize("row", BUILDER_ROWS, ids=_ids(BUILDER_ROWS, "combined"))
def test_with_tag_and_with_digest(row: dict[str, Any]) -> None:
    """Upstream builds these from parts; here the combined text is parsed back into the parts.

    WithDigest checks only a digest's shape, so some rows carry a 39-digit sha256 that upstream's
    Parse (and every runtime) refuses for its length: those rows must be refused here too.
    """
    if row["digest"] and "hex characters" in _reason(row["digest"]):
        assert_rejected(parse_strict, row["combined"], "invalid checksum digest length")
        return
    ref = parse_strict(row["combined"])
    assert (ref.name, ref.tag, ref.digest) == (row["name"], row["tag"] or None, row["digest"] or None)


def _reason(digest: str) -> str:
    from webhook.digests import parse_digest

    try:
        parse_digest(digest)
    except ValueError as error:
        return str(error)
    return ""


PARSE_NAMED_ROWS = REFERENCE_TEST["TestParseNamed"]


@pytest.mark.parametrize("row", PARSE_NAMED_ROWS, ids=_ids(PARSE_NAMED_ROWS, "input"))
def test_parse_named(row: dict[str, Any]) -> None:
    """ParseNamed = ParseNormalizedNamed that refuses text not already in canonical form."""
    ref = parse(row["input"])
    if row["err"]:
        assert ref.name != row["input"]
        return
    assert ref.name == row["input"]
    assert (ref.registry, ref.repository) == (row["domain"], row["path"])


# --- normalize_test.go ------------------------------------------------------------------------------


def _validity_rows(test: str) -> list[tuple[str, bool]]:
    table = NORMALIZE_TEST[test]
    return [(name, True) for name in table["valid"]] + [(name, False) for name in table["invalid"]]


VALIDITY_ROWS = _validity_rows("TestValidateReferenceName") + _validity_rows("TestValidateRemoteName")


@pytest.mark.parametrize(
    ("text", "valid"), VALIDITY_ROWS, ids=[f"{i}:{t[:50]!r}" for i, (t, _) in enumerate(VALIDITY_ROWS)]
)
def test_validate_reference_and_remote_names(text: str, valid: bool) -> None:
    if valid:
        ref = parse(text)
        assert parse(str(ref)).name == ref.name
    else:
        assert_rejected(parse, text)


REPOSITORY_INFO_ROWS = NORMALIZE_TEST["TestParseRepositoryInfo"]


@pytest.mark.parametrize("row", REPOSITORY_INFO_ROWS, ids=_ids(REPOSITORY_INFO_ROWS, "FullName"))
def test_parse_repository_info(row: dict[str, Any]) -> None:
    """Every spelling of the row names the same repository.  (FamiliarName is only an input here:
    pullcheck always shows the full name.)"""
    for text in filter(None, (row["FamiliarName"], row["FullName"], row["AmbiguousName"])):
        ref = parse(text)
        assert (ref.registry, ref.repository, ref.name) == (row["Domain"], row["RemoteName"], row["FullName"])
        assert (ref.tag, ref.digest) == ("latest", None)


@pytest.mark.parametrize("row", NORMALIZE_TEST["TestParseReferenceWithTagAndDigest"])
def test_parse_reference_with_tag_and_digest(row: dict[str, str]) -> None:
    ref = parse(row["input"])
    assert str(ref) == row["expected"]
    assert ref.tag == "latest"
    assert ref.digest is not None and ref.manifest_reference == ref.digest


@pytest.mark.parametrize("row", NORMALIZE_TEST["TestInvalidReferenceComponents"], ids=lambda row: row["what"])
def test_invalid_reference_components(row: dict[str, str]) -> None:
    text = (
        row["name"]
        + (f":{row['tag']}" if "tag" in row else "")
        + (f"@{row['digest']}" if "digest" in row else "")
    )
    message = assert_rejected(parse, text)
    assert {"name": "repository name", "tag": "tag must be", "digest": "digest must be"}[
        row["what"]
    ] in message


ANY_REFERENCE_ROWS = NORMALIZE_TEST["TestParseAnyReference"]


@pytest.mark.parametrize("row", ANY_REFERENCE_ROWS, ids=_ids(ANY_REFERENCE_ROWS, "Reference"))
def test_parse_any_reference(row: dict[str, Any]) -> None:
    if row["Expected"] is not None:
        pytest.skip(
            "ParseAnyReference also reads image IDs and bare digests, which name content already on a node; "
            "a Pod's image is resolved as a name (ParseDockerRef), so parse() has no such form"
        )
    assert_same_as_parse_strict(parse(row["Reference"]), parse_strict(row["Equivalent"]))


SPLIT_HOSTNAME_ROWS = NORMALIZE_TEST["TestNormalizedSplitHostname"]


@pytest.mark.parametrize("row", SPLIT_HOSTNAME_ROWS, ids=_ids(SPLIT_HOSTNAME_ROWS, "input"))
def test_normalized_split_hostname(row: dict[str, str]) -> None:
    ref = parse(row["input"])
    assert (ref.registry, ref.repository) == (row["domain"], row["path"])


DOCKER_REF_ROWS = NORMALIZE_TEST["TestParseDockerRef"]


@pytest.mark.parametrize("row", DOCKER_REF_ROWS, ids=_ids(DOCKER_REF_ROWS, "name"))
def test_parse_docker_ref(row: dict[str, str]) -> None:
    ref = parse(row["input"])
    assert docker_ref_form(ref) == row["expected"]
    assert str(parse_strict(docker_ref_form(ref))) == row["expected"]


# --- regexp_test.go (the grammar, observed through parse_strict) --------------------------------------

DOMAIN_ROWS = REGEXP_TEST["TestDomainRegexp"]


@pytest.mark.parametrize("row", DOMAIN_ROWS, ids=_ids(DOMAIN_ROWS, "input"))
def test_domain_regexp(row: dict[str, Any]) -> None:
    """A string is a registry host exactly when `<it>/repo` parses with it as the domain."""
    try:
        domain = parse_strict(row["input"] + "/repo").domain
    except InvalidReference:
        domain = None
    assert (domain == row["input"]) is row["match"]


FULL_NAME_ROWS = REGEXP_TEST["TestFullNameRegexp"]


@pytest.mark.parametrize("row", FULL_NAME_ROWS, ids=_ids(FULL_NAME_ROWS, "input"))
def test_full_name_regexp(row: dict[str, Any]) -> None:
    try:
        ref = parse_strict(row["input"])
    except InvalidReference as error:
        if row["match"]:  # the regular expression has no length limit; Parse adds it
            assert "more than 255 characters" in str(error)
            assert len(row["input"]) > PATH_MAX
        return
    is_bare_name = ref.tag is None and ref.digest is None
    assert is_bare_name is row["match"]
    if row["match"] and row["subs"]:  # upstream rows list their capture groups, or none
        assert [ref.domain, ref.path] == row["subs"]


REFERENCE_ROWS = REGEXP_TEST["TestReferenceRegexp"]


@pytest.mark.parametrize("row", REFERENCE_ROWS, ids=_ids(REFERENCE_ROWS, "input"))
def test_reference_regexp(row: dict[str, Any]) -> None:
    if not row["match"]:
        assert_rejected(parse_strict, row["input"])
        return
    ref = parse_strict(row["input"])
    assert [ref.name, ref.tag or "", ref.digest or ""] == row["subs"]


IDENTIFIER_ROWS = REGEXP_TEST["TestIdentifierRegexp"]


@pytest.mark.parametrize("row", IDENTIFIER_ROWS, ids=_ids(IDENTIFIER_ROWS, "input"))
def test_identifier_regexp(row: dict[str, Any]) -> None:
    """A 64-hex string is an image ID and never a repository name (ParseNormalizedNamed)."""
    try:
        parse(row["input"])
    except InvalidReference as error:
        assert ("image ID" in str(error)) is row["match"]
    else:
        assert not row["match"]


# --- upstream's own answers (oracle.json) -------------------------------------------------------------


def _beyond_our_limits(text: str) -> str | None:
    """Why we refuse text upstream may accept: our bounds (see webhook.reference), or None."""
    if len(text) > TEXT_MAX:
        return f"longer than {TEXT_MAX} characters"
    first, slash, _ = text.partition("/")
    if slash and len(first) > HOST_MAX:
        return f"registry host must not be more than {HOST_MAX} characters"
    return None


@pytest.mark.parametrize("row", ORACLE, ids=_ids(ORACLE, "input"))
def test_parse_strict_answers_like_upstream_parse(row: dict[str, Any]) -> None:
    expected, text = row["parse"], row["input"]
    limit = _beyond_our_limits(text)
    if "error" in expected:  # over our limits, any reason will do
        assert_rejected(
            parse_strict, text, expected["error"] if limit is None else "invalid reference format"
        )
        return
    if limit is not None:
        assert limit in assert_rejected(parse_strict, text)
        return
    ref = parse_strict(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest, str(ref)) == (
        expected.get("domain", ""),
        expected["path"],
        expected.get("tag"),
        expected.get("digest"),
        expected["string"],
    )


@pytest.mark.parametrize("row", ORACLE, ids=_ids(ORACLE, "input"))
def test_parse_answers_like_upstream_parse_normalized_named(row: dict[str, Any]) -> None:
    expected, text = row["normalized"], row["input"]
    limit = _beyond_our_limits(text)
    if "error" in expected:  # over our limits, any reason will do
        assert_rejected(parse, text, expected["error"] if limit is None else "invalid reference format")
        return
    if limit is not None:
        assert limit in assert_rejected(parse, text)
        return
    ref = parse(text)
    assert (str(ref), ref.tag, ref.digest) == (
        expected["string"],
        expected.get("tag"),
        expected.get("digest"),
    )
    if "domain" in expected:
        assert (ref.registry, ref.repository) == (expected["domain"], expected["path"])
    else:
        # Upstream finds no domain in e.g. `my_host.example/app` (`_` is not allowed in a host name),
        # yet containerd contacts that first component: it is our registry.
        assert ref.name == expected["path"]
        assert ref.registry == text.partition("/")[0]
    assert docker_ref_form(ref) == row["dockerRef"]["string"]


# --- the normalised form ------------------------------------------------------------------------------


def test_normalisation_fills_in_docker_hub_and_latest() -> None:
    ref = parse("nginx")
    assert ref == ImageReference("docker.io", "library/nginx", "latest", None, unqualified=True)
    assert str(ref) == "docker.io/library/nginx:latest"
    assert ref.name == "docker.io/library/nginx"
    assert ref.manifest_reference == "latest"
    assert parse("index.docker.io/nginx:1.27") == ImageReference("docker.io", "library/nginx", "1.27", None)
    assert parse("team/app").unqualified
    assert not parse("localhost/app").unqualified


def test_a_digest_is_what_gets_pulled() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    ref = parse(f"registry.example:5000/team/app@{digest}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "registry.example:5000",
        "team/app",
        None,
        digest,
    )
    assert ref.manifest_reference == digest
    assert str(ref) == f"registry.example:5000/team/app@{digest}"
    assert parse(f"[::1]:5000/app:v1@{digest}").manifest_reference == digest


def test_invalid_reference_is_the_project_error_and_a_value_error() -> None:
    assert InvalidReference is webhook.errors.InvalidReference
    assert issubclass(InvalidReference, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Nginx", 'invalid reference "Nginx": repository name must be lowercase'),
        ("", 'invalid reference "": the image name is empty'),
        ("nginx:", "tag must be 1 to 128 letters"),
        ("nginx:" + "t" * 129, "tag must be 1 to 128 letters"),
        ("nginx:.hidden", "tag must be 1 to 128 letters"),
        ("nginx@sha256:abc", "digest must be <algorithm>:<hex>"),
        ("nginx@md5:" + "a" * 32, 'unsupported digest algorithm "md5"'),
        ("nginx@sha256:" + "A" * 64, "lower-case"),
        ("ex ample.com/app", "registry must be a host name"),
        ("[fe80::1%eth0]:5000/app", "registry must be a host name"),
        ("team//app", "repository name must be path components"),
        ("-app", "repository name must be path components"),
        (" nginx", "repository name must be path components"),
        ("nginx\n", "repository name must be path components"),
        ("a" * 64, "image ID"),
        ("example.com/" + "a" * 256, "repository name must not be more than 255 characters"),
        ("h" * 256 + ".example/app", "registry host must not be more than 255 characters"),
    ],
)
def test_messages_say_what_is_wrong_on_one_line(text: str, message: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 300


def test_hostile_input_is_refused_by_length_first() -> None:
    with pytest.raises(InvalidReference, match=f"longer than {TEXT_MAX} characters"):
        parse("a" * 100_000)
    with pytest.raises(InvalidReference, match=f"longer than {TEXT_MAX} characters"):
        parse_strict("a." * 50_000)


@pytest.mark.parametrize(
    "text",
    [
        "a" * 700 + "!",
        "a." * 380 + "!",
        "a-" * 380 + "/",
        "a__" * 250 + "-",
        "[" + ":" * 700,
        "a/" * 380 + "!",
        "a" * 255 + "/" + "a-" * 250 + "!",
        "0" * 60 + "." + "0-" * 340 + "/x",
    ],
    ids=lambda text: f"{text[:12]!r}x{len(text)}",
)
def test_near_limit_hostile_input_is_refused(text: str) -> None:
    """Inputs shaped to make a backtracking matcher struggle: refused, each well under a second."""
    assert len(text) <= TEXT_MAX
    with pytest.raises(InvalidReference):
        parse(text)
    with pytest.raises(InvalidReference):
        parse_strict(text)


@pytest.mark.parametrize(
    "text",
    [
        "https://robot:s3cr3t-t0ken@registry.example/app:1",
        "robot:s3cr3t-t0ken@registry.example/app",
        "oci://u:s3cr3t-t0ken@h/a",
    ],
)
def test_credentials_typed_into_the_image_never_reach_the_message(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(text)
    assert "s3cr3t-t0ken" not in str(info.value)
    assert "***@" in str(info.value)


# --- properties ---------------------------------------------------------------------------------------

_COMPONENT = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", fullmatch=True).filter(
    lambda s: len(s) <= 40
)
_REGISTRY = st.one_of(
    st.sampled_from(
        ["docker.io/", "index.docker.io/", "localhost/", "localhost:5000/", "[::1]:5000/", "Reg.IO/"]
    ),
    st.from_regex(
        r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?(?:\.[a-z0-9]{1,8}){0,3}(?::[0-9]{1,5})?/", fullmatch=True
    ),
    st.just(""),
)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
_DIGEST = st.sampled_from(["sha256", "sha384", "sha512"]).flatmap(
    lambda algorithm: st.from_regex(
        rf"[0-9a-f]{{{dict(sha256=64, sha384=96, sha512=128)[algorithm]}}}", fullmatch=True
    ).map(lambda hex_digits: f"{algorithm}:{hex_digits}")
)
REFERENCE_TEXT = st.builds(
    lambda registry, path, tag, digest: (
        registry + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ),
    _REGISTRY,
    st.lists(_COMPONENT, min_size=1, max_size=4),
    st.none() | _TAG,
    st.none() | _DIGEST,
)


def _assert_round_trips(ref: ImageReference) -> None:
    again = parse(str(ref))
    assert dataclasses.replace(again, unqualified=ref.unqualified) == ref
    assert not again.unqualified  # the normalised form always names its registry
    assert str(again) == str(ref)


@settings(max_examples=400)
@given(REFERENCE_TEXT)
def test_whatever_parse_accepts_round_trips(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReference as error:
        assert "\n" not in str(error)
        return
    _assert_round_trips(ref)


@settings(max_examples=300)
@given(st.text(max_size=120) | st.text(alphabet="aA0:/@._-[]", max_size=80))
def test_any_text_parses_or_is_refused_with_one_line(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReference as error:
        assert "\n" not in str(error)
        return
    _assert_round_trips(ref)


def test_dotted_capital_i_lower_cases_like_go() -> None:
    """Go lower-cases U+0130 to a plain "i", so upstream calls this an upper-case name, not a bad one."""
    assert "must be lowercase" in assert_rejected(parse_strict, "\u0130mage:1", "must be lowercase")
