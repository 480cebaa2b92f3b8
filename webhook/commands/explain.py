"""`pullcheck explain CODE`: what a finding means on each runtime and how to fix it."""

from __future__ import annotations

import argparse
import sys

from webhook import explain
from webhook.codes import Code
from webhook.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="what a finding code means, per runtime, and how to fix it",
        description="Explain a finding code: what it means on each runtime and version, the error the "
        "runtime itself reports (as `kubectl describe pod` shows it) and how to fix the image. Without "
        "CODE, list the codes.",
    )
    parser.add_argument("code", nargs="?", metavar="CODE", help="a finding code, e.g. SCHEMA1")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.code is None:
        width = max(len(code) for code in explain.EXPLANATIONS)
        for code, entry in explain.EXPLANATIONS.items():
            sys.stdout.write(f"{code:{width}}  {entry.title}\n")
        return 0
    code = args.code.strip().upper()
    if code not in explain.EXPLANATIONS:
        raise ConfigError(
            f"unknown finding code {args.code!r}; known codes: {', '.join(explain.EXPLANATIONS)}"
        )
    sys.stdout.write(explain.to_text(Code(code)) + "\n")
    return 0
