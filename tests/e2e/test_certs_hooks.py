"""The chart's Service form with certificates by `pullcheck certs` (the helm-hook method), end to end.

No Job runs without a controller, so the test installs with `--no-hooks`, creates the hooks' ServiceAccount
and RBAC itself and runs each hook Job's own arguments as a local `pullcheck` with that ServiceAccount's
token. The chart's ClusterIP Service then becomes an ExternalName Service for `localhost` (the API server
resolves those to the name itself), so the API server calls the local webhook through the Service and
checks its certificate against the patched caBundle for <service>.<namespace>.svc.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.e2e.harness import ControlPlane
from tests.e2e.pullcheck_webhook import CHART, SELECT_LABEL, LocalWebhook, registry_policy, unique
from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.registry]


def _pullcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _hook_documents(cluster: ControlPlane, release: str, namespace: str) -> list[dict[str, Any]]:
    hooks = cluster.helm("get", "hooks", release, "--namespace", namespace, check=True)
    return [d for d in yaml.safe_load_all(hooks.stdout) if d]


def test_certs_create_and_patch_give_a_secret_and_a_ca_bundle_the_api_server_uses(
    cluster: ControlPlane, tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    release, namespace, port = unique("pc"), unique("pc-system"), free_port()
    cluster.create_namespace(namespace)
    values = {
        "service": {"port": port},
        "policy": {
            "mode": "enforce",
            "pinDigests": True,
            **registry_policy({"host": registry.host, "insecure": True}),
        },
        "webhook": {"namespaceSelector": {"matchLabels": {SELECT_LABEL: release}}},
    }
    flags = [f for key, value in values.items() for f in ("--set-json", f"{key}={json.dumps(value)}")]
    install = cluster.helm("install", release, str(CHART), "-n", namespace, "--no-hooks", *flags)
    assert install.returncode == 0, install.stderr
    fullname = f"{release}-pullcheck"
    try:
        hooks = _hook_documents(cluster, release, namespace)
        jobs = {d["metadata"]["name"]: d for d in hooks if d["kind"] == "Job"}
        assert set(jobs) == {f"{fullname}-certs-create", f"{fullname}-certs-patch"}
        rights = yaml.safe_dump_all([d for d in hooks if d["kind"] != "Job"])
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rights, check=True)
        token = cluster.service_account_token(namespace, f"{fullname}-certs")
        hook_kubeconfig = cluster.token_kubeconfig(token, tmp_path / "hook-kubeconfig")

        def run_job(step: str) -> subprocess.CompletedProcess[str]:
            container = jobs[f"{fullname}-certs-{step}"]["spec"]["template"]["spec"]["containers"][0]
            args = [a for a in container["args"] if a != "--in-cluster"]
            return _pullcheck(*args, "--kubeconfig", str(hook_kubeconfig))

        created = run_job("create")
        assert created.returncode == 0 and "created" in created.stderr, created.stderr
        secret = cluster.core.read_namespaced_secret(f"{fullname}-tls", namespace)
        assert secret.type == "kubernetes.io/tls"
        files = {k: base64.b64decode(v) for k, v in secret.data.items()}
        cert = x509.load_pem_x509_certificate(files["tls.crt"])
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"{fullname}.{namespace}.svc" in names.get_values_for_type(x509.DNSName)
        # An upgrade runs the create hook again: the Secret that still fits is kept.
        again = run_job("create")
        assert again.returncode == 0 and "kept" in again.stderr, again.stderr
        kept = cluster.core.read_namespaced_secret(f"{fullname}-tls", namespace)
        assert kept.data == secret.data
        patched = run_job("patch")
        assert patched.returncode == 0, patched.stderr
        bundles = cluster.kubectl(
            "get",
            "validatingwebhookconfiguration",
            fullname,
            "-o",
            "jsonpath={.webhooks[*].clientConfig.caBundle}",
        )
        assert bundles.stdout.split() == [secret.data["ca.crt"]]
        # Digest pinning's MutatingWebhookConfiguration shares the name, the certificate and the Service.
        mutating = cluster.kubectl(
            "get",
            "mutatingwebhookconfiguration",
            fullname,
            "-o",
            "jsonpath={.webhooks[*].clientConfig.caBundle}",
        )
        assert mutating.stdout.split() == [secret.data["ca.crt"]]

        cluster.kubectl("delete", "service", fullname, "-n", namespace, check=True)
        external = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": fullname, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        }
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(external), check=True)
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        (tmp_path / "tls.key").chmod(0o600)
        config_map = cluster.core.read_namespaced_config_map(fullname, namespace)
        (tmp_path / "policy.yaml").write_text(config_map.data["policy.yaml"])
        webhook = LocalWebhook(
            tmp_path,
            port,
            "--config",
            str(tmp_path / "policy.yaml"),
            "--cert",
            str(tmp_path / "tls.crt"),
            "--key",
            str(tmp_path / "tls.key"),
            "--static-targets",
        )
        try:
            webhook.wait_ready(tmp_path / "ca.crt", f"{fullname}.{namespace}.svc")
            judged = unique("team")
            cluster.create_namespace(judged, labels={SELECT_LABEL: release})
            refused = cluster.kubectl(
                "run", "legacy", "-n", judged, f"--image={corpus['schema1_signed'].ref}"
            )
            assert refused.returncode == 1, refused.stderr
            assert "SCHEMA1" in refused.stderr
            assert [r["namespace"] for r in webhook.admissions()] == [judged]
            good = corpus["oci"].ref
            pinned = cluster.kubectl("run", "good", "-n", judged, f"--image={good}", check=True)
            assert pinned.returncode == 0
            stored = cluster.core.read_namespaced_pod("good", judged).spec.containers[0].image
            assert stored.startswith(f"{good}@sha256:")
        finally:
            webhook.stop()
    finally:
        cluster.helm("uninstall", release, "-n", namespace)


def test_certs_patch_without_the_secret_is_one_line(cluster: ControlPlane) -> None:
    missing = _pullcheck(
        "certs",
        "patch",
        "--webhook",
        "nothing",
        "--secret",
        "absent",
        "--namespace",
        "default",
        "--kubeconfig",
        str(cluster.kubeconfig),
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("pullcheck: secret default/absent does not exist or holds no ca.crt"), (
        missing.stderr
    )
