"""Reaching the API server: an unusable kubeconfig or an unreachable server is one line, never a traceback."""

from __future__ import annotations

import json
import socket
import threading
import warnings
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.harness.registry import Registry
from webhook.cli import main
from webhook.errors import ClusterError, ConfigError
from webhook.kube import api_client


@pytest.mark.parametrize(
    "content",
    [
        "a: [\n",  # not YAML
        "just a string\n",  # YAML, not a mapping
        "clusters: 5\ncontexts: 7\ncurrent-context: x\n",  # a mapping of the wrong shapes
    ],
)
def test_an_unusable_kubeconfig_is_one_config_error_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(content)
    with pytest.raises(ConfigError, match="cannot use") as raised:
        api_client(str(path))
    assert "\n" not in str(raised.value)


def test_a_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot use"):
        api_client(str(tmp_path / "absent"))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends: nothing listens there


def _kubeconfig(path: Path, server: str, *, insecure: bool) -> Path:
    cluster: dict[str, object] = {"server": server}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "apps"}}],
                "current-context": "c",
            }
        )
    )
    return path


@pytest.mark.parametrize("insecure", [False, True])
def test_an_unreachable_api_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], insecure: bool
) -> None:
    server = f"https://127.0.0.1:{_closed_port()}"
    kubeconfig = _kubeconfig(tmp_path / "kc", server, insecure=insecure)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # what a person's terminal shows, whatever pytest's filters say
        assert main(["audit", "--kubeconfig", str(kubeconfig), "-A"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[-1] == f"pullcheck: cannot reach the API server {server}: connection refused"
    warning = f"pullcheck: warning: {kubeconfig} turns off TLS verification: the identity of {server} is not "
    assert lines[:-1] == ([warning + "checked"] if insecure else [])
    assert captured.out == ""


def _plain_http_server() -> tuple[socket.socket, threading.Thread]:
    """A loopback listener that answers every connection in plain HTTP and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed by the test
            with connection:
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.served
def test_an_api_server_that_does_not_speak_tls_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listener, thread = _plain_http_server()
    try:
        server = f"https://127.0.0.1:{listener.getsockname()[1]}"
        kubeconfig = _kubeconfig(tmp_path / "kc", server, insecure=False)
        assert main(["audit", "--kubeconfig", str(kubeconfig), "-n", "apps"]) == 2
    finally:
        listener.close()
        thread.join(5)
    [line] = capsys.readouterr().err.splitlines()
    assert (
        line == f"pullcheck: cannot reach the API server {server}: TLS failed: the server does not speak TLS"
    )


@pytest.mark.served
@pytest.mark.parametrize("plain_http", [False, True])
def test_the_registry_client_reads_network_errors_alike(
    capsys: pytest.CaptureFixture[str], plain_http: bool
) -> None:
    listener, thread = _plain_http_server() if plain_http else (None, None)
    port = listener.getsockname()[1] if listener else _closed_port()
    try:
        assert main(["check", "-o", "json", f"127.0.0.1:{port}/app:1"]) == 0  # a warning only
    finally:
        if listener and thread:
            listener.close()
            thread.join(5)
    [finding, *_] = json.loads(capsys.readouterr().out)["results"][0]["findings"]
    cause = "TLS failed: the server does not speak TLS" if plain_http else "connection refused"
    assert finding["message"] == f"127.0.0.1:{port}/app: cannot connect to 127.0.0.1:{port}: {cause}"


def test_every_request_of_the_client_reads_an_outage_alike(tmp_path: Path) -> None:
    # Not only the audit's lists: secrets, webhook configurations and watches go through the same layer.
    server = f"https://127.0.0.1:{_closed_port()}"
    api = api_client(str(_kubeconfig(tmp_path / "kc", server, insecure=False)))
    with pytest.raises(ClusterError) as raised:
        k8s.CoreV1Api(api).read_namespaced_secret("tls", "apps")
    assert str(raised.value) == f"cannot reach the API server {server}: connection refused"


@pytest.mark.registry
def test_an_untrusted_certificate_reads_alike_from_both_clients(
    tmp_path: Path, tls_registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    # A TLS server whose CA neither client was given: the registry of the tests, also as an API server.
    server = f"https://{tls_registry.host}"
    kubeconfig = _kubeconfig(tmp_path / "kc", server, insecure=False)
    assert main(["audit", "--kubeconfig", str(kubeconfig), "-n", "apps"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"pullcheck: cannot reach the API server {server}: TLS certificate not trusted (")
    assert main(["check", "-o", "json", f"{tls_registry.host}/app:1"]) == 0  # a warning only
    [finding, *_] = json.loads(capsys.readouterr().out)["results"][0]["findings"]
    cause = line.split(": ", 2)[2]
    assert finding["message"] == f"{tls_registry.host}/app: cannot connect to {tls_registry.host}: {cause}"
