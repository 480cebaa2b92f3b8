"""The chart installed into the test control plane, and `pullcheck serve` as a local process it calls.

Without a kubelet no webhook Pod runs, so each release points its webhook configuration at
`https://127.0.0.1:PORT/validate` (the chart's `webhook.url`) with the local server's CA as caBundle; the
server reads the policy the chart rendered into its ConfigMap and reaches the API with a TokenRequest
token of the chart's ServiceAccount, so the chart's RBAC is all it has.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.harness import ControlPlane
from tests.harness import processes
from tests.harness.registry import free_port
from webhook import certs

CHART = Path(__file__).resolve().parents[2] / "charts" / "pullcheck"
WEBHOOK_NAME = "images.pullcheck.io"
# Namespaces a release judges carry this label with the release's name, so releases do not meet.
SELECT_LABEL = "pullcheck-e2e/release"
_START_SECONDS = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class LocalWebhook:
    """`pullcheck serve` on 127.0.0.1:`port`; its JSON logs go to a file."""

    def __init__(self, workdir: Path, port: int, *args: str) -> None:
        self.port = port
        self.log = workdir / f"serve-{port}.log"
        command = [sys.executable, "-m", "webhook", "serve", "--port", str(port), *args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def admissions(self) -> list[dict[str, Any]]:
        """The one-line-per-admission JSON log records so far."""
        records = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if "uid" in record and "allowed" in record:
                    records.append(record)
        return records

    def wait_ready(self, ca_file: Path, server_name: str | None = None) -> None:
        """Until /readyz answers 200, checking the certificate for `server_name` (default 127.0.0.1)."""
        trust = ssl.create_default_context(cafile=str(ca_file))
        name = {"sni_hostname": server_name} if server_name else {}
        deadline = time.monotonic() + _START_SECONDS
        with httpx.Client(verify=trust, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"pullcheck serve exited {self.process.returncode}:\n{self.output()}"
                    )
                try:
                    answer = http.get(f"https://127.0.0.1:{self.port}/readyz", extensions=name)
                    if answer.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise AssertionError(f"pullcheck serve did not become ready:\n{self.output()}")

    def stop(self) -> None:
        processes.stop(self.process)


def _set_flags(values: dict[str, Any], prefix: str = "") -> list[str]:
    """`--set-json` flags for nested values, so lists and maps reach helm as they are."""
    flags = []
    for key, value in values.items():
        flags += ["--set-json", f"{prefix}{key}={json.dumps(value)}"]
    return flags


@dataclass
class Release:
    """One helm release of the chart with `webhook.url` pointing at a local webhook."""

    cluster: ControlPlane
    workdir: Path
    name: str
    namespace: str  # the release namespace
    port: int
    serving: certs.ServingFiles
    webhooks: list[LocalWebhook] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.name}-pullcheck"

    def helm(self, action: str, values: dict[str, Any]) -> None:
        done = self.cluster.helm(
            action,
            self.name,
            str(CHART),
            "--namespace",
            self.namespace,
            *(["--reuse-values"] if action == "upgrade" else []),
            *_set_flags(values),
        )
        assert done.returncode == 0, done.stderr

    def judged_namespace(self, prefix: str = "team", labels: dict[str, str] | None = None) -> str:
        """A fresh namespace this release's webhook judges."""
        name = unique(prefix)
        self.cluster.create_namespace(name, labels={SELECT_LABEL: self.name, **(labels or {})})
        return name

    def policy_file(self) -> Path:
        """The policy.yaml the chart rendered into its ConfigMap, as the Pod would mount it."""
        config_map = self.cluster.core.read_namespaced_config_map(self.fullname, self.namespace)
        path = self.workdir / f"{self.name}-policy.yaml"
        path.write_text(config_map.data["policy.yaml"])
        return path

    def service_account_kubeconfig(self) -> Path:
        token = self.cluster.service_account_token(self.namespace, self.fullname)
        return self.cluster.token_kubeconfig(token, self.workdir / f"{self.name}-kubeconfig")

    def start_webhook(self, *extra: str) -> LocalWebhook:
        webhook = LocalWebhook(
            self.workdir,
            self.port,
            "--config",
            str(self.policy_file()),
            "--cert",
            str(self.serving.cert_file),
            "--key",
            str(self.serving.key_file),
            "--kubeconfig",
            str(self.service_account_kubeconfig()),
            *extra,
        )
        self.webhooks.append(webhook)
        webhook.wait_ready(self.serving.ca_file)
        return webhook

    def uninstall(self) -> None:
        for webhook in self.webhooks:
            webhook.stop()
        self.cluster.helm("uninstall", self.name, "--namespace", self.namespace, "--wait")


def install(cluster: ControlPlane, workdir: Path, values: dict[str, Any]) -> Release:
    """helm install the chart in a new namespace, its webhook at a local URL that judges only
    namespaces labelled for this release (plus whatever `values` set)."""
    name = unique("pc")
    release_namespace = f"{name}-system"
    cluster.create_namespace(release_namespace)
    port = free_port()
    serving = certs.issue(workdir / f"{name}-pki", ["127.0.0.1"])
    release = Release(cluster, workdir, name, release_namespace, port, serving)
    base = {
        "webhook": {
            "url": f"https://127.0.0.1:{port}/validate",
            "caBundle": base64.b64encode(serving.ca_file.read_bytes()).decode(),
            "namespaceSelector": {"matchLabels": {SELECT_LABEL: name}},
        }
    }
    release.helm("install", _merge(base, values))
    return release


def serving(cluster: ControlPlane, workdir: Path, values: dict[str, Any]) -> Iterator[Release]:
    """For a fixture: the chart installed with `values` and its webhook serving the static targets,
    uninstalled afterwards."""
    release = install(cluster, workdir, values)
    try:
        release.start_webhook("--static-targets")
        yield release
    finally:
        release.uninstall()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def registry_policy(*entries: dict[str, Any]) -> dict[str, Any]:
    """policy.registries for local registries: loopback needs allowPrivateNetwork."""
    return {"registries": [{"allowPrivateNetwork": True, **entry} for entry in entries]}


def pod_manifest(
    name: str, namespace: str, image: str, annotations: dict[str, str] | None = None, **spec: Any
) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": image}], **spec},
    }
    return yaml.safe_dump(pod)


def deployment_manifest(name: str, namespace: str, image: str, **pod_spec: Any) -> str:
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}], **pod_spec},
            },
        },
    }
    return yaml.safe_dump(deployment)
