"""`pullcheck audit`: which running workloads would fail to pull or start on the cluster's nodes?"""

from __future__ import annotations

import argparse
import sys

from webhook import render
from webhook.audit import audit
from webhook.commands.check import (
    add_resolution_options,
    add_timeout_option,
    check_timeout,
    command_line_registries,
    exit_status,
    render_report,
    targets_for,
)
from webhook.placement import NodeGroup, Placement, pulling_locally, static_groups, upgraded
from webhook.policy import Policy
from webhook.policyfile import load_policy
from webhook.wiring import default_docker_config, make_checker, read_keyring


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="judge the images of a cluster's running workloads (read-only)",
        description="List the Pods and workloads of a cluster, resolve each distinct image once and say "
        "which workloads the nodes could not pull or start. Writes nothing to the cluster. Exit status: 0 "
        "when nothing is denied, 1 when an image is, 2 for a usage or configuration error.",
    )
    parser.add_argument(
        "--kubeconfig", metavar="F", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="C", help="kubeconfig context (default: the current one)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="namespace to audit (repeatable; default: the context's namespace)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="audit every namespace")
    add_resolution_options(
        parser,
        runtime_default="default: the cluster's Nodes; given alone, the Nodes as if they ran it",
        platform_default="with --platform the Nodes are not read; default: the Nodes' platforms",
    )
    parser.add_argument(
        "--output",
        "-o",
        choices=("table", "json", "csv", "sarif", "junit"),
        default="table",
        help="table, json, csv, or the CI reports sarif (SARIF 2.1.0) and junit (JUnit XML)",
    )
    add_timeout_option(parser, "seconds for each image's resolution")
    parser.set_defaults(run=run)


def _placement(args: argparse.Namespace, policy: Policy, known: list[NodeGroup] | None) -> Placement:
    """Where the workloads may run: the Nodes, unless --platform says otherwise; --runtime alone asks
    what the Nodes would make of the images if they ran that runtime."""
    if args.platform or known is None:
        return Placement([], static_groups(targets_for(policy, args.runtime, args.platform)))
    static = static_groups(policy.targets)
    if not args.runtime:
        return Placement(known, static)
    runtimes = targets_for(policy, args.runtime, [])
    return Placement(upgraded(known, runtimes), upgraded(static, runtimes))


def run(args: argparse.Namespace) -> int:
    check_timeout(args.timeout)
    policy = load_policy(args.config)
    from webhook import kube
    from webhook.kube.inventory import ClusterReader, context_namespace

    api = kube.api_client(args.kubeconfig, context=args.context, warn=args.warn)
    reader = ClusterReader(api)
    namespaces = (
        None if args.all_namespaces else args.namespace or [context_namespace(args.kubeconfig, args.context)]
    )
    inventory = reader.workloads(namespaces)
    images = [image for workload in inventory.workloads for image in workload.images]
    policy = policy.with_registries(command_line_registries(args, policy, images))
    found = None if args.platform else reader.node_groups()
    known = None if found is None else pulling_locally(found, policy.local_image_pull)
    problems = list(inventory.problems)
    if known is None and not args.platform:
        problems.append("Nodes cannot be listed with these credentials: judged on the policy's targets")
    keyring = read_keyring(args.docker_config or policy.docker_config or default_docker_config())
    checker = make_checker(policy, network_guard=False)
    try:
        report = audit(
            checker.check,
            inventory.workloads,
            _placement(args, policy, known),
            policy,
            node_keyring=keyring,
            pull_secrets=kube.PullSecrets(api, max_bytes=policy.caches.pull_secrets),
            problems=problems,
            timeout=args.timeout,
            on_progress=render.ProgressBar(sys.stderr) if sys.stderr.isatty() else None,
        )
    finally:
        checker.close()
        api.close()  # type: ignore[no-untyped-call]
    sys.stdout.write(render_report(report, args.output, args.fail_on) + "\n")
    return exit_status(report.results, args.fail_on)
