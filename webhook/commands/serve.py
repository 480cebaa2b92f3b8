"""`pullcheck serve`: the validating admission webhook over HTTPS."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import sys
import tempfile
import threading
from typing import Any

from webhook import certs
from webhook.errors import ConfigError
from webhook.policyfile import load_policy
from webhook.server import ServerOptions, serve

# A slow client holds a file descriptor (never a request thread) this long at most.
MAX_REQUEST_SECONDS = 300


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the admission webhook",
        description="Serve POST /validate (AdmissionReview), /healthz, /readyz and /metrics over HTTPS. "
        "Without --cert/--key a self-signed CA and certificate are made and the CA's path is printed.",
    )
    parser.add_argument("--config", metavar="F", help="policy file (YAML); re-read when it changes")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port to listen on (default 8443)")
    parser.add_argument("--cert", metavar="F", help="serving certificate (PEM); re-read when it changes")
    parser.add_argument("--key", metavar="F", help="its private key (PEM); re-read when it changes")
    parser.add_argument(
        "--cert-dir",
        metavar="D",
        help="where to write the self-signed CA and certificate (default: a pullcheck folder in the "
        "system's temporary directory)",
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--kubeconfig", metavar="F", help="read Nodes and pull secrets from the cluster of this kubeconfig"
    )
    cluster.add_argument(
        "--in-cluster", action="store_true", help="read Nodes and pull secrets with the Pod's service account"
    )
    parser.add_argument(
        "--static-targets",
        action="store_true",
        help="judge against the policy's targets even when the cluster is readable (no Node access needed)",
    )
    parser.add_argument(
        "--audit-interval",
        type=float,
        metavar="S",
        help="with cluster access, audit every workload every S seconds (0: never; default: the policy's "
        "auditIntervalSeconds, else never)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", type=int, default=16, help="concurrent requests per worker (default 16)")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=ServerOptions.request_seconds,
        metavar="S",
        help="seconds a connection has for its TLS handshake and whole request before it is closed "
        f"(default {ServerOptions.request_seconds:g})",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(run=run)


def _unspecified(host: str) -> bool:
    """0.0.0.0 or ::, which a listener binds but no certificate can name."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _serving_pair(args: argparse.Namespace) -> tuple[str, str]:
    if bool(args.cert) != bool(args.key):
        raise ConfigError("--cert and --key go together")
    if args.cert:
        return str(args.cert), str(args.key)
    directory = args.cert_dir or os.path.join(tempfile.gettempdir(), f"pullcheck-{os.getuid()}")
    hosts = [h for h in dict.fromkeys([*certs.DEFAULT_HOSTS, args.host]) if not _unspecified(h)]
    files = certs.issue(directory, hosts)
    print(
        f"pullcheck: self-signed certificate for {', '.join(hosts)}; CA at {files.ca_file}", file=sys.stderr
    )
    return str(files.cert_file), str(files.key_file)


def run(args: Any) -> int:
    if args.workers < 1 or args.threads < 1:
        raise ConfigError("--workers and --threads must be at least 1")
    if not 1 <= args.port <= 65535:
        raise ConfigError("--port must be between 1 and 65535")
    if args.audit_interval is not None and not (
        args.audit_interval == 0 or 1 <= args.audit_interval <= threading.TIMEOUT_MAX
    ):
        raise ConfigError("--audit-interval must be 0 (no background audit) or at least 1 second")
    if not 1 <= args.request_timeout <= MAX_REQUEST_SECONDS:
        raise ConfigError(f"--request-timeout must be between 1 and {MAX_REQUEST_SECONDS} seconds")
    load_policy(args.config)  # a bad policy stops here, with one line per bad field
    cert_file, key_file = _serving_pair(args)
    # Flask and the app are imported by `serve` alone: every other command (a pre-commit hook, a CI
    # step) would pay their 0.15 s of imports for nothing.
    from webhook.app import Settings, create_app

    settings = Settings(
        policy_file=args.config,
        kubeconfig=args.kubeconfig,
        in_cluster=args.in_cluster,
        watch_nodes=not args.static_targets,
        audit_interval=args.audit_interval,
    )
    if settings.kubeconfig or settings.in_cluster:
        from webhook import kube

        kube.api_client(settings.kubeconfig, in_cluster=settings.in_cluster)  # fail early, in one line
    options = ServerOptions(
        host=args.host,
        port=args.port,
        cert_file=cert_file,
        key_file=key_file,
        workers=args.workers,
        threads=args.threads,
        request_seconds=args.request_timeout,
        log_level=args.log_level,
    )
    print(f"pullcheck: serving https://{args.host}:{args.port}/validate", file=sys.stderr)
    app_factory = functools.partial(create_app, settings)
    return serve(options, app_factory)
