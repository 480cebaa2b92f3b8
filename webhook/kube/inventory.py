"""Reading a cluster's workloads and Nodes for an audit: list calls only, page by page.

A list the credentials may not make (403) becomes a line in the report, not the end of the run: with
all namespaces asked for, a refused cluster-wide list is retried namespace by namespace.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import urllib3
from kubernetes import client, config

from webhook.errors import ClusterError
from webhook.kube.client import unreachable
from webhook.kube.nodes import node_entry, node_groups
from webhook.placement import NodeGroup
from webhook.workloads import Workload, controller_uid, running_digests, with_running, workload_of

_FORBIDDEN = 403
PAGE_SIZE = 500
REQUEST_TIMEOUT = 60


@dataclass(frozen=True)
class _Kind:
    kind: str
    api_version: str
    all_namespaces: str  # the API method listing every namespace
    namespaced: str  # ... and the one listing one namespace
    api: Callable[[client.ApiClient], Any]


_KINDS = (
    _Kind("Pod", "v1", "list_pod_for_all_namespaces", "list_namespaced_pod", client.CoreV1Api),
    _Kind(
        "ReplicationController",
        "v1",
        "list_replication_controller_for_all_namespaces",
        "list_namespaced_replication_controller",
        client.CoreV1Api,
    ),
    _Kind(
        "Deployment",
        "apps/v1",
        "list_deployment_for_all_namespaces",
        "list_namespaced_deployment",
        client.AppsV1Api,
    ),
    _Kind(
        "StatefulSet",
        "apps/v1",
        "list_stateful_set_for_all_namespaces",
        "list_namespaced_stateful_set",
        client.AppsV1Api,
    ),
    _Kind(
        "DaemonSet",
        "apps/v1",
        "list_daemon_set_for_all_namespaces",
        "list_namespaced_daemon_set",
        client.AppsV1Api,
    ),
    _Kind(
        "ReplicaSet",
        "apps/v1",
        "list_replica_set_for_all_namespaces",
        "list_namespaced_replica_set",
        client.AppsV1Api,
    ),
    _Kind("Job", "batch/v1", "list_job_for_all_namespaces", "list_namespaced_job", client.BatchV1Api),
    _Kind(
        "CronJob",
        "batch/v1",
        "list_cron_job_for_all_namespaces",
        "list_namespaced_cron_job",
        client.BatchV1Api,
    ),
)


@dataclass
class Inventory:
    """What an audit judges, and what it could not read (one line each)."""

    workloads: list[Workload] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # What the Pods run, and who controls whom, to tell each workload what its Pods run (drift).
    pods: list[tuple[str, dict[str, frozenset[str]]]] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # uid -> controller uid


_pauses = 0
_pauses_lock = threading.Lock()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a page is parsed and reduced. A page is a tree of some
    100,000 dicts and lists, freed by reference counting once reduced; collections set off while it
    is built would walk it and, as it gets promoted, the whole heap every few pages (half the CPU of
    listing 50,000 Pods)."""
    global _pauses
    with _pauses_lock:
        _pauses += 1
        gc.disable()
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if not _pauses:
                gc.enable()


def _kept(data: bytes, keep: Callable[[dict[str, Any]], None]) -> str | None:
    """Hand one page to `keep`; the page's continue token. The page is freed before the collector runs."""
    with _collector_paused():
        return _continue_token(orjson.loads(data), keep)


def _continue_token(page: dict[str, Any], keep: Callable[[dict[str, Any]], None]) -> str | None:
    keep(page)
    token = (page.get("metadata") or {}).get("continue")
    return str(token) if token else None


def _refusal(exc: client.ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


class ClusterReader:
    """Read-only listing through an API client: the audit's view of the cluster."""

    def __init__(self, api: client.ApiClient, *, page_size: int = PAGE_SIZE) -> None:
        self._api = api
        self._page_size = page_size
        self._core: Any = client.CoreV1Api(api)  # raw JSON answers, not the typed models

    def _read(self, method: Callable[..., Any], *args: str, keep: Callable[[dict[str, Any]], None]) -> None:
        """Every page of a list, one request each, handed to `keep` to reduce to what it needs (a
        cluster's Pods as JSON would not fit in memory at once)."""
        token: str | None = None
        while True:
            extra = {"_continue": token} if token else {}
            response = method(
                *args,
                limit=self._page_size,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
                **extra,
            )
            token = _kept(response.data, keep)
            if not token:
                return

    def _call(self, what: str, work: Callable[[], Any]) -> Any:
        """Run an API call; anything but a 403 means the audit cannot go on, said in one line."""
        try:
            return work()
        except client.ApiException as exc:
            if exc.status == _FORBIDDEN:
                raise
            raise ClusterError(f"cannot {what}: {_refusal(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # reading a streamed answer
            raise unreachable(self._api.configuration.host, exc) from None

    def _list(self, kind: _Kind, namespace: str | None, into: Inventory) -> bool:
        """Add the kind's workloads of one namespace (None: all) to `into`; False when refused."""
        api = kind.api(self._api)
        method = getattr(api, kind.all_namespaces if namespace is None else kind.namespaced)
        args = () if namespace is None else (namespace,)
        where = "all namespaces" if namespace is None else f"namespace {namespace}"
        # `into` changes only when every page was read.
        found = Inventory()

        def keep(page: dict[str, Any]) -> None:
            for item in page.get("items") or []:
                metadata = item.get("metadata") or {}
                uid = str(metadata.get("uid") or "")
                if uid and controller_uid(metadata):
                    found.owners[uid] = controller_uid(metadata)
                if kind.kind == "Pod" and uid:
                    found.pods.append((uid, running_digests(item)))
                workload = workload_of({**item, "apiVersion": kind.api_version}, kind.kind)
                if workload is not None:
                    found.workloads.append(workload)

        try:
            self._call(f"list {kind.kind}s in {where}", lambda: self._read(method, *args, keep=keep))
        except client.ApiException as exc:
            if namespace is not None:
                into.problems.append(f"{kind.kind}s in {where} not audited: {_refusal(exc)}")
            return False
        into.owners.update(found.owners)
        into.pods.extend(found.pods)
        into.workloads.extend(found.workloads)
        return True

    def namespaces(self) -> list[str]:
        """Every namespace's name; ClusterError when they cannot be listed."""
        names: list[str] = []

        def keep(page: dict[str, Any]) -> None:
            names.extend(str(item["metadata"]["name"]) for item in page.get("items") or [])

        try:
            self._call("list namespaces", lambda: self._read(self._core.list_namespace, keep=keep))
        except client.ApiException as exc:
            raise ClusterError(f"cannot list namespaces ({_refusal(exc)}); name them with -n") from None
        return sorted(names)

    def workloads(self, namespaces: Sequence[str] | None) -> Inventory:
        """The workloads of these namespaces (None: every namespace), sorted by namespace, kind and name."""
        inventory = Inventory()
        each_namespace: list[str] | None = None
        for kind in _KINDS:
            if namespaces is None and self._list(kind, None, inventory):
                continue
            if namespaces is None and each_namespace is None:
                each_namespace = self.namespaces()
            for namespace in namespaces if namespaces is not None else each_namespace or []:
                self._list(kind, namespace, inventory)
        inventory.workloads = with_running(inventory.workloads, inventory.pods, inventory.owners)
        inventory.workloads.sort(key=lambda w: (w.namespace, w.kind, w.name))
        return inventory

    def node_groups(self) -> list[NodeGroup] | None:
        """The cluster's Nodes as node groups; None when the credentials may not list Nodes."""
        nodes: list[dict[str, Any]] = []

        def keep(page: dict[str, Any]) -> None:
            nodes.extend(page.get("items") or [])

        try:
            self._call("list Nodes", lambda: self._read(self._core.list_node, keep=keep))
        except client.ApiException:
            return None
        entries = (node_entry(node) for node in nodes)
        return node_groups(e for e in entries if e is not None)


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig's context: what kubectl uses when no namespace is named."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
