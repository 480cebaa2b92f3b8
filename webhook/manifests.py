"""Reading Kubernetes manifests: YAML (one or many documents) or JSON, from a file or standard input."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from webhook.errors import ConfigError, InvalidReview
from webhook.podspec import CONTAINER_FIELDS, pod_spec_of
from webhook.workloads import objects_in, workload_of

STDIN = "-"


def parse_manifests(text: str, source: str) -> list[Any]:
    """The documents of a manifest text; ConfigError naming the source and place when it is not YAML."""
    if text.lstrip().startswith(("{", "[")):
        try:
            document = json.loads(text)
        except ValueError:
            pass  # YAML flow style also starts with a brace; let the YAML parser judge it
        else:
            return document if isinstance(document, list) else [document]
    try:
        # The C loader where PyYAML has it: a rendered chart or a cluster dump can be megabytes.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [d for d in yaml.load_all(text, Loader=loader) if d is not None]  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: {yaml_problem(exc, 'not valid YAML or JSON')}") from None


def yaml_problem(error: yaml.YAMLError, fallback: str) -> str:
    """What the YAML parser objects to and where, e.g. "found unexpected ':' at line 3, column 7"."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(error, 'problem', None) or fallback}{where}"


def read_text(path: str) -> str:
    """A file's text, or standard input's for `-`."""
    if path == STDIN:
        try:
            text = sys.stdin.read()
            text.encode("utf-8")  # a stream decoding with surrogateescape lets bytes that are not UTF-8 in
        except UnicodeError:
            raise ConfigError("standard input: the manifests are not UTF-8 text") from None
        return text
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the manifests: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the manifests are not UTF-8 text") from None


def dump_manifests(documents: list[Any]) -> str:
    """Documents as one YAML stream, keys in their order, as `kubectl apply -f` and Helm read them."""
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, allow_unicode=True)


def source_name(path: str) -> str:
    return "standard input" if path == STDIN else path


@dataclass(frozen=True)
class SourceLine:
    """Where a container's `image:` field stands in a manifest file (line and column from 1)."""

    path: str
    line: int
    column: int


class _Marked(dict[Any, Any]):
    """A YAML mapping that remembers where each of its keys stood."""

    marks: dict[Any, tuple[int, int]]


class _MarkingLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader whose mappings keep their keys' positions, as the parser reported them."""


def _construct_marked(loader: Any, node: yaml.MappingNode) -> Any:
    data = _Marked()
    data.marks = {}
    yield data
    data.update(loader.construct_mapping(node))  # also flattens `<<` merge keys into node.value
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        mark = key_node.start_mark
        if isinstance(key, str):
            data.marks.setdefault(key, (mark.line + 1, mark.column + 1))


_MarkingLoader.add_constructor("tag:yaml.org,2002:map", _construct_marked)


def image_lines(text: str, path: str) -> dict[tuple[str, str], SourceLine]:
    """(workload label, image) -> the first `image:` field naming that image in that workload, read from
    the YAML parser's positions. Empty for text the YAML parser cannot read (JSON it can is read)."""
    try:
        documents = list(yaml.load_all(text, Loader=_MarkingLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return {}
    found: dict[tuple[str, str], SourceLine] = {}
    for obj in objects_in(documents):
        try:
            workload = workload_of(obj)
            if workload is None:
                continue
            pod_spec = pod_spec_of(workload.kind, obj)
        except (ConfigError, InvalidReview):
            continue  # the judging itself names what is wrong with this object
        for field_name in CONTAINER_FIELDS:
            entries = pod_spec.get(field_name)
            for entry in entries if isinstance(entries, list) else []:
                image = entry.get("image") if isinstance(entry, _Marked) else None
                if isinstance(image, str) and "image" in entry.marks:
                    line, column = entry.marks["image"]
                    found.setdefault((workload.label, image), SourceLine(path, line, column))
    return found
