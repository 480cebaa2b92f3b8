"""`pullcheck serve` as a process on 127.0.0.1, and what tests send it."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness import processes
from tests.harness.registry import free_port

_START_SECONDS = 30.0
_CHANGE_SECONDS = 20.0  # the policy file is looked at every 2 s
_WEBHOOK_TIMEOUT = 10.0  # the apiserver's default timeoutSeconds


def review(
    *images: str, kind: str = "Pod", uid: str = "4f6e1c3a-0000-4000-8000-000000000001"
) -> dict[str, Any]:
    spec = {"containers": [{"name": f"c{n}", "image": image} for n, image in enumerate(images)]}
    if kind == "Pod":
        obj: dict[str, Any] = {"metadata": {"name": "p"}, "spec": spec}
    elif kind == "CronJob":
        obj = {"metadata": {"name": "w"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}
    else:
        obj = {"metadata": {"name": "w"}, "spec": {"template": {"spec": spec}}}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": kind},
            "operation": "CREATE",
            "namespace": "default",
            "object": obj,
        },
    }


def trust(ca_file: str | Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def write_policy(path: Path, registries: list[dict[str, Any]], **values: Any) -> Path:
    path.write_text(yaml.safe_dump({"registries": registries, **values}))
    return path


def local_registries(hosts: list[str]) -> list[dict[str, Any]]:
    """Policy entries for registries of the tests' own: plain HTTP on loopback, allowed past the guard."""
    return [{"host": host, "insecure": True, "allowPrivateNetwork": True} for host in hosts]


class Webhook:
    """A `pullcheck serve` process; stderr (the JSON logs) goes to a file."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "webhook", "serve", "--port", str(self.port), *args]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ca_file(self) -> Path:
        match = re.search(r"CA at (\S+)", self.output())
        assert match, self.output()
        return Path(match.group(1))

    def wait_ready(self, ca_file: str | Path) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"pullcheck serve exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", verify=trust(ca_file), timeout=2).status_code == 200:
                    return
            except (httpx.TransportError, OSError):  # the CA file may not be written yet
                pass
            time.sleep(0.2)
        raise AssertionError(f"pullcheck serve did not become ready:\n{self.output()}")

    def stop(self) -> None:
        processes.stop(self.process)


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/validate", json=body, timeout=_WEBHOOK_TIMEOUT)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["response"]
    return answer


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _CHANGE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen")
        time.sleep(0.3)
