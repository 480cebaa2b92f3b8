"""`pullcheck certs create|patch`: the webhook's serving certificate without cert-manager.

The chart runs them in Helm hook Jobs (the create/patch pattern): `create` makes a CA and a certificate for
the Service's DNS names and stores them in a `kubernetes.io/tls` Secret, keeping a Secret that still fits
(so an upgrade does not rotate the CA under running Pods); `patch` puts that Secret's CA into the
caBundle of every webhook of the ValidatingWebhookConfiguration (and of the MutatingWebhookConfiguration of
the same name, when digest pinning made one).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from typing import Any

from cryptography import x509

from webhook import certs
from webhook.errors import ConfigError

TLS_FILES = ("ca.crt", "tls.crt", "tls.key")
DEFAULT_RENEW_DAYS = 30


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="create the webhook's TLS Secret and put its CA into the webhook configuration",
        description="Manage the webhook's serving certificate through the Kubernetes API.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="store a CA and a serving certificate for the Service in a kubernetes.io/tls Secret",
        description="Create the Secret (ca.crt, tls.crt, tls.key) for SERVICE.NAMESPACE.svc. A Secret that "
        "already holds a certificate for these names, valid for more than --renew-days, is kept.",
    )
    create.add_argument("--service", required=True, help="the webhook's Service name")
    create.add_argument("--namespace", required=True, help="the namespace of the Service and the Secret")
    create.add_argument("--secret", required=True, help="the Secret to create")
    create.add_argument(
        "--days", type=int, default=certs.DEFAULT_VALIDITY_DAYS, help="validity of a new certificate (365)"
    )
    create.add_argument(
        "--renew-days",
        type=int,
        default=DEFAULT_RENEW_DAYS,
        help=f"replace a kept certificate this many days before it expires ({DEFAULT_RENEW_DAYS})",
    )
    create.set_defaults(run=run_create)
    patch = actions.add_parser(
        "patch",
        help="put the Secret's ca.crt into the caBundle of every webhook of a ValidatingWebhookConfiguration "
        "and of the MutatingWebhookConfiguration of the same name, if there is one",
    )
    patch.add_argument("--webhook", required=True, help="the ValidatingWebhookConfiguration's name")
    patch.add_argument("--secret", required=True, help="the Secret holding ca.crt")
    patch.add_argument("--namespace", required=True, help="the Secret's namespace")
    patch.set_defaults(run=run_patch)
    for action in (create, patch):
        cluster = action.add_mutually_exclusive_group()
        cluster.add_argument("--kubeconfig", metavar="F", help="reach the cluster of this kubeconfig")
        cluster.add_argument("--in-cluster", action="store_true", help="use the Pod's service account")


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names the API server may use for the Service; it verifies SERVICE.NAMESPACE.svc."""
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}",
        service,
        f"{service}.{namespace}.svc.cluster.local",
    ]


def still_fits(files: dict[str, bytes], hosts: list[str], renew_days: int) -> bool:
    """True when the Secret holds a complete pair for exactly `hosts` that lives past the renewal window."""
    if any(not files.get(name) for name in TLS_FILES):
        return False
    try:
        cert = x509.load_pem_x509_certificate(files["tls.crt"])
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    renew_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=renew_days)
    return set(names.get_values_for_type(x509.DNSName)) == set(hosts) and cert.not_valid_after_utc > renew_at


def _api(args: Any) -> Any:
    from webhook import kube

    return kube.api_client(args.kubeconfig, in_cluster=args.in_cluster, warn=args.warn)


def run_create(args: Any) -> int:
    from webhook.kube import webhookconfig

    if args.days < 1 or not 0 <= args.renew_days < args.days:
        raise ConfigError("--days must be at least 1 and --renew-days between 0 and --days")
    hosts = service_hosts(args.service, args.namespace)
    where = f"secret {args.namespace}/{args.secret}"
    with _api(args) as api:
        existing = webhookconfig.read_tls_secret(api, args.namespace, args.secret)
        if existing is not None and still_fits(existing, hosts, args.renew_days):
            print(f"pullcheck: {where} holds a current certificate for {hosts[0]}; kept", file=sys.stderr)
            return 0
        with tempfile.TemporaryDirectory(prefix="pullcheck-certs-") as directory:
            issued = certs.issue(directory, hosts, days=args.days)
            files = {
                "ca.crt": issued.ca_file.read_bytes(),
                "tls.crt": issued.cert_file.read_bytes(),
                "tls.key": issued.key_file.read_bytes(),
            }
        webhookconfig.write_tls_secret(api, args.namespace, args.secret, files)
    print(f"pullcheck: {where} {'replaced' if existing else 'created'} for {hosts[0]}", file=sys.stderr)
    return 0


def run_patch(args: Any) -> int:
    from webhook.kube import webhookconfig

    with _api(args) as api:
        secret = webhookconfig.read_tls_secret(api, args.namespace, args.secret)
        ca = (secret or {}).get("ca.crt")
        if not ca:
            raise ConfigError(f"secret {args.namespace}/{args.secret} does not exist or holds no ca.crt")
        count = webhookconfig.patch_ca_bundle(api, args.webhook, ca)
    print(
        f"pullcheck: caBundle of {count} webhook(s) in {args.webhook} set from {args.secret}", file=sys.stderr
    )
    return 0
