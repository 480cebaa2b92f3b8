"""`pullcheck audit` against a real apiserver holding planted workloads whose images are in the real corpus.

The audit gets a control plane of its own: `-A` must list the planted workloads and nothing else, and
Nodes are cluster-wide, so other tests' Nodes and namespaces would change its answer.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client as k8s

from tests.e2e.harness import CONTAINERD_1_7, CRIO_1_33, ControlPlane
from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.registry]

PULLCHECK = str(Path(sys.executable).parent / "pullcheck")


def _pod_spec(image: str, **extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "main", "image": image}], **extra}


def _template(image: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": _pod_spec(image, **extra)}


def _owner(kind: str, name: str, uid: str, api_version: str) -> list[dict[str, Any]]:
    return [{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}]


def plant(cluster: ControlPlane, corpus: dict[str, CorpusImage]) -> None:
    """Nodes on CRI-O and containerd 1.7, and workloads of every kind, good and bad."""
    cluster.create_node("crio-1", runtime=CRIO_1_33, platform="linux/amd64", labels={"pool": "crio"})
    cluster.create_node(
        "containerd-1", runtime=CONTAINERD_1_7, platform="linux/amd64", labels={"pool": "ctd"}
    )
    for namespace in ("team-a", "team-b"):
        cluster.create_namespace(namespace)
    image = {name: corpus[name].ref for name in corpus}
    selector = {"matchLabels": {"app": "x"}}
    objects: list[dict[str, Any]] = [
        # team-a: schema 1 (warned on CRI-O and containerd 1.7), and a good one
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "legacy", "namespace": "team-a"},
            "spec": {"selector": selector, "template": _template(image["schema1_signed"])},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": "team-a"},
            "spec": {
                "schedule": "0 3 * * *",
                "jobTemplate": {
                    "spec": {"template": _template(image["schema1_signed"], restartPolicy="OnFailure")}
                },
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "good", "namespace": "team-a"},
            "spec": {"selector": selector, "template": _template(image["oci"])},
        },
        # team-b: an artifact, a single-platform image for another platform, a 386-only index that only
        # containerd runs (pinned to containerd it is fine)
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "chart-as-image", "namespace": "team-b"},
            "spec": {"selector": selector, "serviceName": "x", "template": _template(image["artifact"])},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "wrong-platform", "namespace": "team-b"},
            "spec": _pod_spec(image["other_platform"]),
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "i386-anywhere", "namespace": "team-b"},
            "spec": {"selector": selector, "template": _template(image["index_386_only"])},
        },
        {
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": "i386-on-containerd", "namespace": "team-b"},
            "spec": {
                "selector": {"app": "x"},
                "template": _template(image["index_386_only"], nodeSelector={"pool": "ctd"}),
            },
        },
    ]
    for obj in objects:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=True)
    # What controllers would have made: covered by their owners, so never reported on their own (their
    # images are bad, so showing up would fail the test).
    apps, batch = k8s.AppsV1Api(cluster.api_client), k8s.BatchV1Api(cluster.api_client)
    legacy = apps.read_namespaced_deployment("legacy", "team-a")
    nightly = batch.read_namespaced_cron_job("nightly", "team-a")
    owned = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "legacy-5d8f",
                "namespace": "team-a",
                "ownerReferences": _owner("Deployment", "legacy", legacy.metadata.uid, "apps/v1"),
            },
            "spec": {"selector": selector, "template": _template(image["missing_config"])},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "nightly-29000",
                "namespace": "team-a",
                "ownerReferences": _owner("CronJob", "nightly", nightly.metadata.uid, "batch/v1"),
            },
            "spec": {"template": _template(image["missing_layer"], restartPolicy="Never")},
        },
    ]
    for obj in owned:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=True)
    replica_set = apps.read_namespaced_replica_set("legacy-5d8f", "team-a")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "legacy-5d8f-abcde",
            "namespace": "team-a",
            "ownerReferences": _owner("ReplicaSet", "legacy-5d8f", replica_set.metadata.uid, "apps/v1"),
        },
        "spec": _pod_spec(image["missing_child"]),
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod), check=True)


@pytest.fixture(scope="module")
def audit_cluster(
    tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, CorpusImage]
) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("audit-cluster"))
    try:
        plant(plane, corpus)
        yield plane
    finally:
        plane.stop()


def audit(cluster: ControlPlane, registry: Registry, *args: str, kubeconfig: Path | None = None) -> Any:
    return subprocess.run(
        [
            PULLCHECK,
            "audit",
            "--kubeconfig",
            str(kubeconfig or cluster.kubeconfig),
            "--insecure-registry",
            registry.host,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def failing_rows(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(namespace/kind/name, verdict, codes) of every workload with a denied or warned image."""
    rows = set()
    for result in document["results"]:
        if result["verdict"] == "allow":
            continue
        codes = ",".join(
            sorted({f["code"] for f in result["findings"] if f["severity"] == result["verdict"]})
        )
        for w in result["workloads"]:
            rows.add((f"{w['namespace']}/{w['kind']}/{w['name']}", result["verdict"], codes))
    return rows


def test_audit_all_namespaces_lists_the_planted_workloads_and_nothing_else(
    audit_cluster: ControlPlane, registry: Registry
) -> None:
    done = audit(audit_cluster, registry, "-A", "-o", "json")
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    assert document["problems"] == []
    assert failing_rows(document) == {
        ("team-a/Deployment/legacy", "warn", "SCHEMA1"),
        ("team-a/CronJob/nightly", "warn", "SCHEMA1"),
        ("team-b/StatefulSet/chart-as-image", "deny", "NOT_AN_IMAGE"),
        ("team-b/Pod/wrong-platform", "deny", "PLATFORM_MISMATCH"),
        ("team-b/DaemonSet/i386-anywhere", "deny", "NO_MATCHING_PLATFORM"),
    }
    allowed = {
        f"{w['namespace']}/{w['kind']}/{w['name']}"
        for r in document["results"]
        if r["verdict"] == "allow"
        for w in r["workloads"]
    }
    assert allowed == {"team-a/Deployment/good", "team-b/ReplicationController/i386-on-containerd"}
    # The 386-only index fails on the CRI-O node only: that is where the finding says it fails.
    [i386] = [r for r in document["results"] if r["verdict"] == "deny" and "index_386_only" in r["image"]]
    assert {(f["code"], f["runtime"]) for f in i386["findings"]} == {("NO_MATCHING_PLATFORM", CRIO_1_33)}


def test_runtime_flag_answers_the_upgrade_question(audit_cluster: ControlPlane, registry: Registry) -> None:
    done = audit(audit_cluster, registry, "-A", "--runtime", "containerd://2.1.0", "-o", "json")
    assert done.returncode == 1, done.stderr
    assert failing_rows(json.loads(done.stdout)) == {
        ("team-a/Deployment/legacy", "deny", "SCHEMA1"),
        ("team-a/CronJob/nightly", "deny", "SCHEMA1"),
        ("team-b/StatefulSet/chart-as-image", "deny", "NOT_AN_IMAGE"),
        ("team-b/Pod/wrong-platform", "deny", "PLATFORM_MISMATCH"),
        # containerd 1.7 falls back from amd64 to 386; 2.1's transfer service fetches exact matches only
        ("team-b/DaemonSet/i386-anywhere", "deny", "NO_MATCHING_PLATFORM"),
        ("team-b/ReplicationController/i386-on-containerd", "deny", "NO_MATCHING_PLATFORM"),
    }


def test_table_groups_by_verdict_and_counts(audit_cluster: ControlPlane, registry: Registry) -> None:
    done = audit(audit_cluster, registry, "-n", "team-a")
    assert done.returncode == 0, done.stderr  # warnings only: --fail-on deny passes
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["VERDICT", "WORKLOAD", "IMAGE", "REASON"]
    verdicts = [line.split()[0] for line in lines[1:-1]]
    assert verdicts == ["WARN", "WARN", "ALLOW"]
    assert (
        lines[1].split()[1] == "team-a/CronJob/nightly" and lines[2].split()[1] == "team-a/Deployment/legacy"
    )
    assert "SCHEMA1" in lines[1] and "cri-o://1.33.2" in lines[1] and "containerd://1.7.27" in lines[1]
    assert lines[-1] == "3 workloads: 0 denied, 2 warned, 1 allowed; 2 images: 0 denied, 1 warned, 1 allowed"
    assert done.stderr == ""  # no progress bar on a pipe
    assert audit(audit_cluster, registry, "-n", "team-a", "--fail-on", "warn").returncode == 1


def test_csv_has_a_row_per_workload_image_and_finding(
    audit_cluster: ControlPlane, registry: Registry
) -> None:
    done = audit(audit_cluster, registry, "-n", "team-b", "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    by_name = {(r["name"], r["code"], r["runtime"]) for r in rows}
    assert ("i386-anywhere", "NO_MATCHING_PLATFORM", CRIO_1_33) in by_name
    assert ("i386-on-containerd", "", "") in by_name
    assert {r["namespace"] for r in rows} == {"team-b"}


def test_forbidden_namespaces_and_nodes_are_report_lines(
    audit_cluster: ControlPlane, registry: Registry, tmp_path: Path
) -> None:
    """An auditor allowed to read team-a only: team-b and the Nodes are named as not audited."""
    cluster = audit_cluster
    cluster.create_service_account("default", "auditor")
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "workload-reader"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "replicationcontrollers", "namespaces"],
                    "verbs": ["list"],
                },
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
                    "verbs": ["list"],
                },
                {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "auditor", "namespace": "team-a"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "workload-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "auditor", "namespace": "default"}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "namespace-lister"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "auditor-namespaces"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "namespace-lister",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "auditor", "namespace": "default"}],
        },
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac), check=True)
    kubeconfig = cluster.token_kubeconfig(
        cluster.service_account_token("default", "auditor"), tmp_path / "kc"
    )
    events_before = len(cluster.audit_events())
    done = audit(cluster, registry, "-A", "-o", "json", kubeconfig=kubeconfig)
    document = json.loads(done.stdout)
    # Without Nodes, the policy's targets: containerd 2.1 is among them and refuses schema 1.
    assert done.returncode == 1, done.stderr
    assert ("team-a/Deployment/legacy", "deny", "SCHEMA1") in failing_rows(document)
    problems = document["problems"]
    assert "Pods in namespace team-b not audited: HTTP 403 Forbidden" in problems
    assert "Nodes cannot be listed with these credentials: judged on the policy's targets" in problems
    assert not any("team-a" in p for p in problems)
    namespaces = {w["namespace"] for r in document["results"] for w in r["workloads"]}
    assert namespaces == {"team-a"}
    # Read-only: the auditor's requests are lists and gets, never a write.
    verbs = {
        e["verb"]
        for e in cluster.audit_events()[events_before:]
        if e["user"]["username"] == "system:serviceaccount:default:auditor"
    }
    assert verbs and verbs <= {"list", "get"}


def test_sarif_and_junit_name_each_workload(audit_cluster: ControlPlane, registry: Registry) -> None:
    done = audit(audit_cluster, registry, "-n", "team-b", "-o", "sarif")
    assert done.returncode == 1, done.stderr
    log = json.loads(done.stdout)
    schema = json.loads((Path(__file__).parent.parent / "data" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft4Validator(schema).validate(log)
    located = {
        (r["ruleId"], r["level"], r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"])
        for r in log["runs"][0]["results"]
    }
    assert located == {
        ("NOT_AN_IMAGE", "error", "team-b/StatefulSet/chart-as-image"),
        ("PLATFORM_MISMATCH", "error", "team-b/Pod/wrong-platform"),
        ("NO_MATCHING_PLATFORM", "error", "team-b/DaemonSet/i386-anywhere"),
    }
    # Workloads from the cluster have no file: no physical location.
    assert not any("physicalLocation" in r["locations"][0] for r in log["runs"][0]["results"])

    done = audit(audit_cluster, registry, "-n", "team-b", "-o", "junit")
    assert done.returncode == 1, done.stderr
    suite = ET.fromstring(done.stdout)[0]
    verdicts = {
        c.get("classname"): (c.find("failure").get("message") if c.find("failure") is not None else "pass")
        for c in suite.iter("testcase")
    }
    assert verdicts == {
        "team-b/StatefulSet/chart-as-image": f"NOT_AN_IMAGE on {CONTAINERD_1_7} linux/amd64, "
        f"{CRIO_1_33} linux/amd64",
        "team-b/Pod/wrong-platform": f"PLATFORM_MISMATCH on {CONTAINERD_1_7} linux/amd64, "
        f"{CRIO_1_33} linux/amd64",
        "team-b/DaemonSet/i386-anywhere": f"NO_MATCHING_PLATFORM on {CRIO_1_33} linux/amd64",
        "team-b/ReplicationController/i386-on-containerd": "pass",
    }


def test_kubectl_finds_the_plugin_on_path(
    audit_cluster: ControlPlane, registry: Registry, tmp_path: Path
) -> None:
    """The real kubectl runs `kubectl-pullcheck` from PATH for `kubectl pullcheck ...`, with kubectl's
    usual --kubeconfig, --context and -n / -A, as krew installs it."""
    cluster = audit_cluster
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "kubectl-pullcheck").symlink_to(Path(PULLCHECK).with_name("kubectl-pullcheck"))
    # A second context in the kubeconfig, named on the command line: the plugin reads --context itself.
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig["contexts"].append({"name": "audit", "context": {**kubeconfig["contexts"][0]["context"]}})
    kubeconfig["contexts"][0]["context"]["cluster"] = "nowhere"  # the current context is unusable
    with socket.socket() as probe:  # a loopback port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        nowhere = f"https://127.0.0.1:{probe.getsockname()[1]}"
    kubeconfig["clusters"].append({"name": "nowhere", "cluster": {"server": nowhere}})
    (tmp_path / "kc").write_text(yaml.safe_dump(kubeconfig))
    env = {
        "PATH": f"{plugins}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    kubectl = str(cluster.binaries["kubectl"])

    listed = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert str(plugins / "kubectl-pullcheck") in listed.stdout, listed.stderr

    common = [
        "--kubeconfig",
        str(tmp_path / "kc"),
        "--context",
        "audit",
        "--insecure-registry",
        registry.host,
    ]
    for scope in (["-A"], ["-n", "team-a"]):
        done = subprocess.run(
            [kubectl, "pullcheck", "audit", *common, *scope, "-o", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        namespaces = {w["namespace"] for r in json.loads(done.stdout)["results"] for w in r["workloads"]}
        assert namespaces == ({"team-a", "team-b"} if scope == ["-A"] else {"team-a"}), done.stderr
    # Errors carry the plugin's name as kubectl users typed it.
    done = subprocess.run(
        [kubectl, "pullcheck", "audit", "--kubeconfig", str(tmp_path / "kc"), "-A"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"kubectl pullcheck: cannot reach the API server {nowhere}: connection refused"
    )


def test_an_insecure_kubeconfig_warns_once(
    audit_cluster: ControlPlane, registry: Registry, tmp_path: Path
) -> None:
    """Every list and page is a request; urllib3 would warn on each. One line says it instead."""
    kubeconfig = yaml.safe_load(audit_cluster.kubeconfig.read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    cluster.pop("certificate-authority", None)
    cluster["insecure-skip-tls-verify"] = True
    path = tmp_path / "insecure"
    path.write_text(yaml.safe_dump(kubeconfig))
    done = audit(audit_cluster, registry, "-A", "-o", "json", kubeconfig=path)
    assert done.returncode == 1 and json.loads(done.stdout)["results"]
    assert done.stderr.splitlines() == [
        f"pullcheck: warning: {path} turns off TLS verification: the identity of "
        f"{audit_cluster.server} is not checked"
    ]
