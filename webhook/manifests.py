"""Reading Kubernetes manifests: YAML (one or many documents) or JSON, from a file or standard input."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from webhook.errors import ConfigError

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


def read_manifests(path: str) -> list[Any]:
    return parse_manifests(read_text(path), "standard input" if path == STDIN else path)
