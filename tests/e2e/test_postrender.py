"""`pullcheck postrender` and `check -f` with the real helm, installing into the real apiserver."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.e2e.harness import ControlPlane
from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.registry]

PULLCHECK = str(Path(sys.executable).parent / "pullcheck")

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers: [{name: init, image: "{{ .Values.initImage }}"}]
      containers: [{name: web, image: "{{ .Values.image }}"}]
"""
CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ .Release.Name }}-nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: job, image: "{{ .Values.jobImage }}"}]
"""


@pytest.fixture
def chart(tmp_path: Path, corpus: dict[str, CorpusImage]) -> Path:
    directory = tmp_path / "app"
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 0.1.0\n")
    good = corpus["oci"].ref
    (directory / "values.yaml").write_text(f'image: "{good}"\ninitImage: "{good}"\njobImage: "{good}"\n')
    (directory / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    (directory / "templates" / "cronjob.yaml").write_text(CRONJOB)
    return directory


@pytest.fixture
def namespace(cluster: ControlPlane) -> str:
    name = f"helm-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    return name


def _install(
    cluster: ControlPlane, registry: Registry, chart: Path, namespace: str, *values: str
) -> subprocess.CompletedProcess[str]:
    settings = [arg for value in values for arg in ("--set", value)]
    post_render_args = ["postrender", f"--insecure-registry={registry.host}", "--runtime=containerd://2.1.0"]
    return cluster.helm(
        "install",
        "rel",
        str(chart),
        "-n",
        namespace,
        "--post-renderer",
        PULLCHECK,
        *(arg for a in post_render_args for arg in ("--post-renderer-args", a)),
        *settings,
    )


def test_clean_release_installs_unchanged(
    cluster: ControlPlane, registry: Registry, chart: Path, namespace: str
) -> None:
    done = _install(cluster, registry, chart, namespace)
    assert done.returncode == 0, done.stderr
    deployment = k8s.AppsV1Api(cluster.api_client).read_namespaced_deployment("rel-web", namespace)
    assert deployment.spec.template.spec.containers[0].image.endswith("/corpus/oci:oci")
    # Unchanged: what helm stored as the release manifest is what it rendered without the post-renderer.
    stored = cluster.helm("get", "manifest", "rel", "-n", namespace, check=True).stdout
    rendered = cluster.helm("template", "rel", str(chart), "-n", namespace, check=True).stdout
    assert stored.strip() == rendered.strip()


def test_denied_image_fails_the_install_with_the_reasons(
    cluster: ControlPlane, registry: Registry, chart: Path, namespace: str, corpus: dict[str, CorpusImage]
) -> None:
    done = _install(cluster, registry, chart, namespace, f"jobImage={corpus['schema1_signed'].ref}")
    assert done.returncode != 0
    assert "SCHEMA1" in done.stderr and "CronJob/rel-nightly" in done.stderr
    assert "removed in containerd 2.1" in done.stderr
    assert k8s.AppsV1Api(cluster.api_client).list_namespaced_deployment(namespace).items == []
    assert cluster.helm("status", "rel", "-n", namespace).returncode != 0  # no release was recorded


def test_check_file_reads_helm_template_output(
    cluster: ControlPlane, registry: Registry, chart: Path, corpus: dict[str, CorpusImage]
) -> None:
    rendered = cluster.helm(
        "template", "rel", str(chart), "--set", f"initImage={corpus['artifact'].ref}", check=True
    ).stdout
    done = subprocess.run(
        [PULLCHECK, "check", "-f", "-", "--insecure-registry", registry.host, "--runtime", "cri-o://1.33.0"],
        input=rendered,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    [denied] = [line for line in done.stdout.splitlines() if line.startswith("DENY")]
    assert denied.split()[1:3] == ["Deployment/rel-web", corpus["artifact"].ref]
    assert "NOT_AN_IMAGE" in denied
    assert done.stdout.splitlines()[-1].startswith("2 workloads: 1 denied, 0 warned, 1 allowed")


def test_pin_installs_the_release_with_images_pinned_to_the_digest_judged(
    cluster: ControlPlane, registry: Registry, chart: Path, namespace: str, corpus: dict[str, CorpusImage]
) -> None:
    post_render_args = [
        "postrender",
        f"--insecure-registry={registry.host}",
        "--runtime=containerd://2.1.0",
        "--pin",
    ]
    done = cluster.helm(
        "install", "rel", str(chart), "-n", namespace, "--post-renderer", PULLCHECK,
        *(arg for a in post_render_args for arg in ("--post-renderer-args", a)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checked = subprocess.run(
        [PULLCHECK, "check", corpus["oci"].ref, "--insecure-registry", registry.host, "-o", "json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    pinned = f"{corpus['oci'].ref}@{json.loads(checked.stdout)['results'][0]['digest']}"
    deployment = k8s.AppsV1Api(cluster.api_client).read_namespaced_deployment("rel-web", namespace)
    pod_spec = deployment.spec.template.spec
    assert [c.image for c in pod_spec.init_containers + pod_spec.containers] == [pinned, pinned]
    cron_job = k8s.BatchV1Api(cluster.api_client).read_namespaced_cron_job("rel-nightly", namespace)
    assert cron_job.spec.job_template.spec.template.spec.containers[0].image == pinned
