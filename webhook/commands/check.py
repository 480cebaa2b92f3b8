"""`pullcheck check IMAGE...` or `-f FILE`: will these images, or those of these manifests, pull and
start on my nodes?"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from webhook import pinning, platforms, render, reports
from webhook.audit import audit
from webhook.auditreport import AuditReport
from webhook.deadline import Deadline
from webhook.errors import ConfigError
from webhook.findings import DENY, WARN, ImageResult
from webhook.manifests import SourceLine, dump_manifests, image_lines, parse_manifests, read_text, source_name
from webhook.placement import Placement, static_groups
from webhook.policy import Policy, RegistryOptions
from webhook.policyfile import load_policy
from webhook.reference import InvalidReference, parse
from webhook.runtimes import Target, parse_runtime
from webhook.wiring import default_docker_config, make_checker, read_keyring
from webhook.workloads import workloads_in

DEFAULT_CHECK_TIMEOUT = 30.0
MAX_CHECK_TIMEOUT = 600


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="judge images for containerd and CRI-O",
        description="Resolve each image against its registry and say whether the target runtimes can "
        "pull and start it. Exit status: 0 when nothing is denied, 1 when an image is, 2 for a usage "
        "or configuration error.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image reference, e.g. nginx:1.27")
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        metavar="FILE",
        help="Kubernetes manifests (YAML or JSON, - for standard input) whose workloads' images to judge, "
        "instead of IMAGE arguments (repeatable)",
    )
    parser.add_argument(
        "--manifests",
        action="store_true",
        help="read the arguments as manifest files, each as if given with -f (for pre-commit and xargs)",
    )
    add_resolution_options(parser)
    add_pin_option(
        parser,
        "with -f: print the manifests with each judged image pinned to the digest "
        "judged (denied and unresolved images left as written), and the report on standard error",
    )
    parser.add_argument(
        "--output",
        "-o",
        choices=("table", "json", "sarif", "junit"),
        default="table",
        help="table, json, or with -f the CI reports sarif (SARIF 2.1.0) and junit (JUnit XML)",
    )
    add_timeout_option(parser, "seconds for the whole resolution, with -f for each image's")
    parser.set_defaults(run=run)


def add_timeout_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CHECK_TIMEOUT,
        metavar="S",
        help=f"{text} (default {DEFAULT_CHECK_TIMEOUT:g})",
    )


def check_timeout(seconds: float) -> None:
    """The --timeout of check, audit and postrender: above 0 and at most MAX_CHECK_TIMEOUT."""
    if not 0 < seconds <= MAX_CHECK_TIMEOUT:
        raise ConfigError(f"--timeout must be above 0 and at most {MAX_CHECK_TIMEOUT} seconds")


def add_resolution_options(
    parser: argparse.ArgumentParser,
    runtime_default: str = "default: the policy's targets, else containerd 2.1 and CRI-O 1.33",
    platform_default: str = "default linux/amd64",
) -> None:
    """The options of every command that judges images: targets, policy, credentials, registries."""
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="R",
        help="runtime as Kubernetes names it, e.g. containerd://2.1.3 or cri-o://1.33.2 (repeatable; "
        f"{runtime_default})",
    )
    parser.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="P",
        help=f"node platform os/arch[/variant] (repeatable; {platform_default})",
    )
    parser.add_argument("--config", metavar="F", help="policy file (YAML), the same one the webhook reads")
    parser.add_argument(
        "--docker-config",
        metavar="F",
        help="docker config.json with registry credentials (default: the policy's dockerConfig, "
        "else $DOCKER_CONFIG/config.json or ~/.docker/config.json when present)",
    )
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="H",
        help="registry host[:port] to reach over plain HTTP (repeatable)",
    )
    parser.add_argument("--ca-file", metavar="F", help="extra CA bundle for the registries of these images")
    parser.add_argument(
        "--fail-on",
        choices=(DENY, WARN),
        default=DENY,
        help="exit 1 when an image gets this verdict or worse (default deny)",
    )


def add_pin_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--pin", action="store_true", help=text)


def pinned_documents(report: AuditReport, documents: list[Any]) -> list[Any]:
    """The manifests with each image pinned to the digest judged; an image denied for any workload
    stays as written."""
    denied = {result.image for result in report.results if result.verdict == DENY}
    pinned = {image: text for image, text in pinning.pins(report.results).items() if image not in denied}
    return [pinning.pin_object(d, pinned) if isinstance(d, Mapping) else d for d in documents]


def targets_for(policy: Policy, runtimes: list[str], platform_texts: list[str]) -> list[Target]:
    """--runtime × --platform; a side not given comes from the policy's targets."""
    if not runtimes and not platform_texts:
        return list(policy.targets)
    try:
        chosen_runtimes = [parse_runtime(r) for r in runtimes] or list(
            dict.fromkeys(t.runtime for t in policy.targets)
        )
        chosen_platforms = [platforms.parse(p) for p in platform_texts] or [platforms.parse("linux/amd64")]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return [Target(r, p) for r, p in itertools.product(chosen_runtimes, chosen_platforms)]


def command_line_registries(
    args: argparse.Namespace, policy: Policy, images: Iterable[str]
) -> list[RegistryOptions]:
    """Registry options the flags add to (or change in) the policy's; --ca-file serves these images."""
    hosts = set(args.insecure_registry)
    if args.ca_file:
        for image in images:
            try:
                hosts.add(parse(image).registry)
            except InvalidReference:
                continue
    added = []
    for host in sorted(hosts):
        base = policy.registry_options(host) or RegistryOptions(host=host)
        added.append(
            replace(
                base,
                insecure=base.insecure or host in args.insecure_registry,
                ca_file=args.ca_file or base.ca_file,
            )
        )
    return added


def exit_status(results: list[ImageResult], fail_on: str) -> int:
    failing = {DENY} if fail_on == DENY else {DENY, WARN}
    return 1 if any(r.verdict in failing for r in results) else 0


def judge_manifests(args: argparse.Namespace, documents: list[Any]) -> AuditReport:
    """Every workload image in parsed manifests, judged for the flags' targets with local credentials."""
    workloads = workloads_in(documents)
    policy = load_policy(args.config)
    images = [image for workload in workloads for image in workload.images]
    policy = policy.with_registries(command_line_registries(args, policy, images))
    targets = targets_for(policy, args.runtime, args.platform)
    keyring = read_keyring(args.docker_config or policy.docker_config or default_docker_config())
    checker = make_checker(policy, network_guard=False)
    try:
        placement = Placement([], static_groups(targets))
        return audit(checker.check, workloads, placement, policy, node_keyring=keyring, timeout=args.timeout)
    finally:
        checker.close()


def render_report(
    report: AuditReport, output: str, fail_on: str = DENY, lines: reports.ImageLines | None = None
) -> str:
    """A judged set of workloads in the chosen output; `lines` locate images in manifest files."""
    if output == "json":
        return render.audit_to_json(report)
    if output == "csv":
        return render.audit_to_csv(report)
    if output == "sarif":
        return reports.to_sarif(report, lines)
    if output == "junit":
        return reports.to_junit(report, fail_on, lines)
    return render.audit_to_table(report)


def run(args: argparse.Namespace) -> int:
    check_timeout(args.timeout)
    if args.manifests:
        args.filename, args.images = args.filename + args.images, []
    if bool(args.images) == bool(args.filename):
        raise ConfigError("give IMAGE arguments or -f FILE, one of the two")
    if args.filename:
        texts = [(path, read_text(path)) for path in args.filename]
        documents = [d for path, text in texts for d in parse_manifests(text, source_name(path))]
        report = judge_manifests(args, documents)
        lines: dict[tuple[str, str], SourceLine] = {}
        if args.output in ("sarif", "junit"):
            for path, text in texts:
                for key, where in image_lines(text, path).items():
                    lines.setdefault(key, where)
        output = render_report(report, args.output, args.fail_on, lines)
        if args.pin:
            sys.stderr.write(output + "\n")
            sys.stdout.write(dump_manifests(pinned_documents(report, documents)))
        else:
            sys.stdout.write(output + "\n")
        return exit_status(report.results, args.fail_on)
    if args.pin:
        raise ConfigError("--pin rewrites manifests: give them with -f FILE")
    if args.output in ("sarif", "junit"):
        raise ConfigError(f"--output {args.output} reports on manifests: use it with -f FILE")
    policy = load_policy(args.config)
    policy = policy.with_registries(command_line_registries(args, policy, args.images))
    targets = targets_for(policy, args.runtime, args.platform)
    keyring = read_keyring(args.docker_config or policy.docker_config or default_docker_config())
    # The command line runs for the person who typed it: their local and private registries are fair game.
    checker = make_checker(policy, network_guard=False)
    try:
        # The requests one admission may make, for each image: a list is judged image by image.
        deadline = Deadline(args.timeout, policy.requests_per_admission * len(set(args.images)))
        results = checker.check(args.images, targets, policy, keyring, deadline)
    finally:
        checker.close()
    output = render.to_json(results) if args.output == "json" else render.to_table(results)
    sys.stdout.write(output + "\n")
    return exit_status(results, args.fail_on)
