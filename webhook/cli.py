"""The `pullcheck` command line: parse, call, render; errors are one line and exit status 2."""

from __future__ import annotations

import argparse
import sys

from webhook import __version__
from webhook.commands import audit, certs, check, explain, postrender, serve
from webhook.errors import PullcheckError

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullcheck",
        description="Admit only container images that the cluster's runtimes can pull and run.",
    )
    parser.add_argument("--version", action="version", version=f"pullcheck {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (check, serve, certs, audit, postrender, explain):
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except PullcheckError as exc:  # configuration, usage or a cluster that refused: one line, status 2
        print(f"pullcheck: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    return status
