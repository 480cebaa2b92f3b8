"""`pullcheck postrender`: a Helm post-renderer that fails a release whose images the nodes cannot run.

Helm pipes the rendered manifests in and installs what comes out: they come out unchanged when no
image is denied (with `--pin`, with each image pinned to the digest judged); otherwise nothing comes
out, the table of reasons goes to standard error (which Helm shows in its error) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys

from webhook import render
from webhook.commands.check import (
    add_pin_option,
    add_resolution_options,
    add_timeout_option,
    check_timeout,
    exit_status,
    judge_manifests,
    pinned_documents,
)
from webhook.findings import ALLOW
from webhook.manifests import STDIN, dump_manifests, parse_manifests, read_text


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "postrender",
        help="Helm post-renderer: pass the manifests through, or fail on images the nodes cannot run",
        description="Read rendered manifests on standard input and print them unchanged when no image is "
        "denied; otherwise print the reasons on standard error and exit 1. Use it as "
        "`helm install --post-renderer pullcheck --post-renderer-args postrender ...`.",
    )
    add_resolution_options(parser)
    add_pin_option(parser, "pin each image to the digest judged (`app:1.2` -> `app:1.2@sha256:...`)")
    add_timeout_option(parser, "seconds for each image's resolution")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_timeout(args.timeout)
    text = read_text(STDIN)
    documents = parse_manifests(text, "the rendered manifests")
    report = judge_manifests(args, documents)
    if exit_status(report.results, args.fail_on):
        sys.stderr.write(f"pullcheck: these images would not run:\n{render.audit_to_table(report)}\n")
        return 1
    if any(result.verdict != ALLOW for result in report.results):
        sys.stderr.write(render.audit_to_table(report) + "\n")
    sys.stdout.write(dump_manifests(pinned_documents(report, documents)) if args.pin else text)
    return 0
