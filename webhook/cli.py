"""The `pullcheck` command line: parse, call, render; errors are one line and exit status 2."""

from __future__ import annotations

import argparse
import sys

from webhook import __version__
from webhook.commands import audit, certs, check, explain, postrender, serve
from webhook.errors import PullcheckError
from webhook.text import printable

USAGE_ERROR = 2


def build_parser(prog: str = "pullcheck") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Admit only container images that the cluster's runtimes can pull and run.",
    )
    parser.add_argument("--version", action="version", version=f"pullcheck {__version__}")
    # One line on standard error for what a command goes on despite (e.g. a kubeconfig without TLS checks).
    parser.set_defaults(warn=lambda text: print(f"{prog}: warning: {printable(text)}", file=sys.stderr))
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (check, serve, certs, audit, postrender, explain):
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None, prog: str = "pullcheck") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        status: int = args.run(args)
    except PullcheckError as exc:  # configuration, usage or a cluster that refused: one line, status 2
        print(f"{prog}: {printable(str(exc))}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    return status


def kubectl_main(argv: list[str] | None = None) -> int:
    """`kubectl-pullcheck`: kubectl finds it on PATH and runs it for `kubectl pullcheck ...` (krew's
    naming). kubectl passes the arguments after the plugin's name and its environment (KUBECONFIG)."""
    return main(argv, prog="kubectl pullcheck")
