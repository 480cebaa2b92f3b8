"""A real Kubernetes control plane for the tests: etcd and kube-apiserver on 127.0.0.1, nothing else.

The envtest approach: no kubelet, scheduler or controller-manager run, so the helpers here create what
those would have (a namespace's `default` ServiceAccount, Nodes with their status). The apiserver runs
with RBAC and Node authorization, the ServiceAccount and ValidatingAdmissionWebhook admission plugins and
an audit log, so permissions, admission and audit annotations are the real ones.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s

from tests.e2e import build_binaries
from tests.harness import processes

AUDIT_POLICY = Path(__file__).resolve().parent / "audit-policy.yaml"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "NodeRestriction",
    "DefaultTolerationSeconds",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ResourceQuota",
)

# Runtimes as Nodes report them in status.nodeInfo.containerRuntimeVersion.
CONTAINERD_1_7 = "containerd://1.7.27"
CONTAINERD_2_1 = "containerd://2.1.3"
CRIO_1_33 = "cri-o://1.33.2"

_START_ATTEMPTS = 3
_READY_TIMEOUT = 120.0
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """etcd or kube-apiserver did not come up."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # If pytest is killed outright, its etcd and apiserver must not outlive it holding ports and memory.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Proxy variables would send the apiserver's webhook calls and the clients' requests off the machine.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HOME=str(home), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra or {})
    return env


# -- certificates -------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
    sans: Iterable[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    sans = list(sans)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class _Pki:
    ca_file: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_public_key: Path

    @classmethod
    def create(cls, directory: Path) -> _Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullcheck-e2e-ca")])
        ca = _certificate(ca_name, ca_key, None)
        issuer = (ca_name, ca_key)
        service_ip = next(ipaddress.IPv4Network(SERVICE_CIDR).hosts())
        serving_key = _key()
        serving = _certificate(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            serving_key,
            issuer,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(service_ip),
                x509.DNSName("localhost"),
                *(x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc")),
            ],
        )
        admin_key = _key()
        # The apiserver reads a client certificate's O as the user's groups: system:masters is cluster-admin.
        admin = _certificate(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "pullcheck-e2e-admin"),
                ]
            ),
            admin_key,
            issuer,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        service_account_key = _key()
        files = {
            "ca.crt": _pem_cert(ca),
            "apiserver.crt": _pem_cert(serving),
            "apiserver.key": _pem_key(serving_key),
            "admin.crt": _pem_cert(admin),
            "admin.key": _pem_key(admin_key),
            "service-account.key": _pem_key(service_account_key),
            "service-account.pub": service_account_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            (directory / name).write_bytes(data)
            if name.endswith(".key"):
                (directory / name).chmod(0o600)
        return cls(
            ca_file=directory / "ca.crt",
            serving_cert=directory / "apiserver.crt",
            serving_key=directory / "apiserver.key",
            admin_cert=directory / "admin.crt",
            admin_key=directory / "admin.key",
            service_account_key=directory / "service-account.key",
            service_account_public_key=directory / "service-account.pub",
        )


# -- processes ----------------------------------------------------------------------------------------


class _Process:
    """A child process whose output goes to a log file that start-up errors quote."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def failure(self, what: str) -> ControlPlaneError:
        return ControlPlaneError(f"{self.name} {what}; last lines of {self.log}:\n{self.tail()}")

    def stop(self) -> None:
        processes.stop(self.popen)


def _wait_until(ready: Callable[[], bool], process: _Process, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.exited():
            raise process.failure(f"exited with status {process.popen.returncode} before it was {what}")
        with contextlib.suppress(httpx.HTTPError):
            if ready():
                return
        time.sleep(0.2)
    raise process.failure(f"was not {what} within {timeout:.0f}s")


# -- the control plane --------------------------------------------------------------------------------


class ControlPlane:
    """etcd plus kube-apiserver on 127.0.0.1 free ports, with an admin kubeconfig, kubectl and helm.

    Use `ControlPlane.start(workdir)`, then `stop()`. Everything it writes stays under `workdir`.
    """

    def __init__(self, workdir: Path, binaries: Mapping[str, Path]) -> None:
        self.workdir = workdir
        self.binaries = dict(binaries)
        self.pki = _Pki.create(workdir / "pki")
        self.kubeconfig = workdir / "kubeconfig"
        self.audit_log_path = workdir / "audit.log"
        self.home = workdir / "home"
        self.home.mkdir(exist_ok=True)
        self.server = ""
        self.etcd_url = ""
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None

    @classmethod
    def start(cls, workdir: Path, binaries: Mapping[str, Path] | None = None) -> ControlPlane:
        plane = cls(workdir, binaries or build_binaries.ensure())
        try:
            plane._boot()
        except BaseException:
            plane.stop()
            raise
        return plane

    # -- start and stop

    def _boot(self) -> None:
        # A free port can be taken between choosing and binding it; then start again on new ones.
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_etcd()
                self._start_apiserver()
                break
            except ControlPlaneError as error:
                self._stop_processes()
                if attempt == _START_ATTEMPTS or "address already in use" not in str(error):
                    raise
        self._write_kubeconfig(
            self.kubeconfig,
            {"client-certificate": str(self.pki.admin_cert), "client-key": str(self.pki.admin_key)},
        )
        for namespace in ("default", "kube-system", "kube-public"):
            self._ensure_default_service_account(namespace)

    def _start_etcd(self) -> None:
        client_url = f"http://127.0.0.1:{_free_port()}"
        peer_url = f"http://127.0.0.1:{_free_port()}"
        data = self.workdir / "etcd"
        # A retry starts a new single-member cluster; the old member's data names the old peer URL.
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        self._etcd = _Process(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=default",
                f"--data-dir={data}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # The data lives as long as the test session: durability buys nothing and costs seconds.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
            _child_env(self.home),
        )
        self.etcd_url = client_url
        _wait_until(
            lambda: httpx.get(f"{client_url}/health", timeout=2).json().get("health") == "true",
            self._etcd,
            "healthy",
            30,
        )

    def _start_apiserver(self) -> None:
        port = _free_port()
        self.server = f"https://127.0.0.1:{port}"
        pki = self.pki
        self._apiserver = _Process(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_file}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
                f"--audit-policy-file={AUDIT_POLICY}",
                f"--audit-log-path={self.audit_log_path}",
                "--audit-log-format=json",
                # Written before the response completes, so a test can read its request's event at once.
                "--audit-log-mode=blocking",
                "--allow-privileged=true",
                # Endpoints may not hold a loopback address; nothing here needs the `kubernetes` Service's.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            self.workdir / "kube-apiserver.log",
            _child_env(self.home),
        )
        tls = ssl.create_default_context(cafile=pki.ca_file)
        tls.load_cert_chain(pki.admin_cert, pki.admin_key)
        with httpx.Client(verify=tls, timeout=5) as http:
            _wait_until(
                lambda: http.get(f"{self.server}/readyz").status_code == 200,
                self._apiserver,
                "ready",
                _READY_TIMEOUT,
            )

    def _stop_processes(self) -> None:
        # The apiserver first: it would otherwise spend its shutdown retrying a vanished etcd.
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop()
        self._apiserver = self._etcd = None

    def stop(self) -> None:
        client = self.__dict__.pop("api_client", None)
        if client is not None:
            client.close()
        self._stop_processes()

    # -- clients

    def _write_kubeconfig(self, path: Path, user: Mapping[str, str]) -> Path:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {"server": self.server, "certificate-authority": str(self.pki.ca_file)},
                }
            ],
            "users": [{"name": "e2e", "user": dict(user)}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
            "current-context": "e2e",
        }
        path.write_text(yaml.safe_dump(document))
        path.chmod(0o600)
        return path

    @cached_property
    def api_client(self) -> k8s.ApiClient:
        """A cluster-admin client (system:masters)."""
        return self._client(cert_file=str(self.pki.admin_cert), key_file=str(self.pki.admin_key))

    def _client(self, **auth: Any) -> k8s.ApiClient:
        configuration = k8s.Configuration(host=self.server)
        configuration.ssl_ca_cert = str(self.pki.ca_file)
        for name, value in auth.items():
            setattr(configuration, name, value)
        return k8s.ApiClient(configuration)

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    def _run(
        self,
        binary: str,
        args: tuple[str, ...],
        input: str | None,
        check: bool,
        timeout: float,
        env: Mapping[str, str],
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binaries[binary]), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=_child_env(self.home, {"KUBECONFIG": str(self.kubeconfig), **env}),
        )

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = False,
        timeout: float = 60,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as cluster-admin (or as the user of `kubeconfig`); output is text."""
        env = {"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}
        return self._run("kubectl", args, input, check, timeout, env)

    def helm(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run helm as cluster-admin, with its cache, config and data kept under the work directory."""
        helm_home = self.workdir / "helm"
        env = {f"HELM_{kind}_HOME": str(helm_home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
        return self._run("helm", args, input, check, timeout, env)

    # -- what controllers would have created

    def _ensure_default_service_account(self, namespace: str) -> None:
        # The ServiceAccount admission plugin refuses Pods in a namespace that has no `default` account.
        body = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default"))
        try:
            self.core.create_namespaced_service_account(namespace, body)
        except k8s.ApiException as error:
            if error.status != 409:
                raise

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> k8s.V1Namespace:
        """A namespace with its `default` ServiceAccount, as the controller-manager would leave it."""
        namespace = self.core.create_namespace(
            k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=dict(labels or {})))
        )
        self._ensure_default_service_account(name)
        return namespace

    def create_node(
        self,
        name: str,
        runtime: str = CONTAINERD_2_1,
        platform: str = "linux/amd64",
        labels: Mapping[str, str] | None = None,
    ) -> k8s.V1Node:
        """A Node as its kubelet would register it, reporting `runtime` and `platform` in its status."""
        os_name, _, arch = platform.partition("/")
        if not arch or "/" in arch:
            raise ValueError(f"a Node reports os/arch only, not {platform!r}")
        all_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": os_name,
            "kubernetes.io/arch": arch,
            **(labels or {}),
        }
        self.core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name=name, labels=all_labels)))
        kubelet_version = build_binaries.TOOLS["kube-apiserver"].version
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "status": {
                "nodeInfo": {
                    "machineID": name,
                    "systemUUID": name,
                    "bootID": name,
                    "kernelVersion": "6.12.0",
                    "osImage": "Debian GNU/Linux 13 (trixie)",
                    "containerRuntimeVersion": runtime,
                    "kubeletVersion": kubelet_version,
                    "kubeProxyVersion": "",
                    "operatingSystem": os_name,
                    "architecture": arch,
                },
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        }
        # Status goes through its own subresource; a create or update of the Node would drop it.
        node: k8s.V1Node = self.core.patch_node_status(
            name, status, _content_type="application/strategic-merge-patch+json"
        )
        return node

    def delete_node(self, name: str) -> None:
        self.core.delete_node(name)

    def create_pull_secret(
        self, namespace: str, name: str, registry: str, username: str, password: str
    ) -> k8s.V1Secret:
        """A `kubernetes.io/dockerconfigjson` Secret holding one registry's credentials."""
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        config = {"auths": {registry: {"username": username, "password": password, "auth": auth}}}
        secret = k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": json.dumps(config)},
        )
        created: k8s.V1Secret = self.core.create_namespaced_secret(namespace, secret)
        return created

    def create_service_account(
        self, namespace: str, name: str, image_pull_secrets: Iterable[str] = ()
    ) -> k8s.V1ServiceAccount:
        body = k8s.V1ServiceAccount(
            metadata=k8s.V1ObjectMeta(name=name),
            image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in image_pull_secrets] or None,
        )
        created: k8s.V1ServiceAccount = self.core.create_namespaced_service_account(namespace, body)
        return created

    # -- acting as a ServiceAccount

    def service_account_token(
        self, namespace: str, name: str, expiration_seconds: int = 3600, audiences: Iterable[str] = ()
    ) -> str:
        """A bound token for the ServiceAccount from the TokenRequest API (the apiserver's audience)."""
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=list(audiences), expiration_seconds=expiration_seconds)
        )
        response = self.core.create_namespaced_service_account_token(name, namespace, request)
        if response.status is None or not response.status.token:
            raise AssertionError(f"TokenRequest for {namespace}/{name} returned no token")
        return response.status.token

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """A kubeconfig that authenticates with `token` only: a process using it has exactly its rights."""
        return self._write_kubeconfig(path, {"token": token})

    def token_client(self, token: str) -> k8s.ApiClient:
        """An API client that authenticates with `token` only. The caller closes it."""
        return self._client(api_key={"authorization": token}, api_key_prefix={"authorization": "Bearer"})

    # -- audit

    def audit_events(self) -> list[dict[str, Any]]:
        """Every event in the audit log so far (JSON lines, audit.k8s.io/v1 Event)."""
        if not self.audit_log_path.exists():
            return []
        lines = self.audit_log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for_audit_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        """The first audit event matching `predicate`, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.audit_events():
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching audit event in {self.audit_log_path} within {timeout}s")
            time.sleep(0.1)
