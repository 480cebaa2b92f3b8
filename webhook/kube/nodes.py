"""The cluster's Nodes as node groups, kept current by list + watch in a background thread."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client, watch

from webhook.placement import HOSTNAME_LABEL, PER_NODE_LABELS, Member, NodeGroup
from webhook.platforms import Platform
from webhook.runtimes import Target, parse_runtime

log = logging.getLogger(__name__)

_WATCH_SECONDS = 300  # the server ends each watch after this; we resume from the last resourceVersion
_GONE = 410
_NodeKey = tuple[Target, frozenset[tuple[str, str]]]
_Node = tuple[_NodeKey, Member]


def node_key(node: Mapping[str, Any]) -> _NodeKey | None:
    """A Node's target (runtime and platform from status.nodeInfo) and its shared labels.

    None when the node does not report a runtime pullcheck knows (it is left out of the groups)."""
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    try:
        runtime = parse_runtime(str(info.get("containerRuntimeVersion") or ""))
    except ValueError:
        return None
    os_name = str(info.get("operatingSystem") or labels.get("kubernetes.io/os") or "linux")
    arch = str(info.get("architecture") or labels.get("kubernetes.io/arch") or "amd64")
    shared = frozenset((str(k), str(v)) for k, v in labels.items() if k not in PER_NODE_LABELS)
    return Target(runtime, Platform(os_name, arch)), shared


def node_entry(node: Mapping[str, Any]) -> _Node | None:
    """A Node's key (see node_key) and who it is: its name and kubernetes.io/hostname label."""
    key = node_key(node)
    if key is None:
        return None
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    return key, (str(metadata.get("name") or ""), str(labels.get(HOSTNAME_LABEL) or ""))


def node_groups(nodes: Iterable[_Node]) -> list[NodeGroup]:
    """Nodes with the same target and shared labels, counted, in a stable order."""
    members: dict[_NodeKey, set[Member]] = {}
    counted: Counter[_NodeKey] = Counter()
    for key, member in nodes:
        counted[key] += 1
        members.setdefault(key, set()).add(member)
    ordered = sorted(counted.items(), key=lambda item: (str(item[0][0]), sorted(item[0][1])))
    return [
        NodeGroup(target, count, dict(labels), frozenset(members[(target, labels)]))
        for (target, labels), count in ordered
    ]


class NodeView:
    """The node groups of a cluster, from a list and then a watch of Nodes, resumed when it ends."""

    def __init__(self, api: client.ApiClient, *, retry_seconds: float = 2.0) -> None:
        # Any: pullcheck reads raw JSON (_preload_content=False), not the client's typed models.
        self._core: Any = client.CoreV1Api(api)
        self._retry = retry_seconds
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._groups: list[NodeGroup] | None = []
        self._synced = threading.Event()
        self._stopped = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name="pullcheck-nodes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def groups(self) -> list[NodeGroup]:
        with self._lock:
            if self._groups is None:
                self._groups = node_groups(self._nodes.values())
            return self._groups

    def _apply(self, kind: str, node: Mapping[str, Any]) -> None:
        name = str((node.get("metadata") or {}).get("name") or "")
        entry = node_entry(node)
        with self._lock:
            if kind == "DELETED" or entry is None:
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = entry
            self._groups = None

    def _list(self) -> str:
        response = self._core.list_node(_preload_content=False, _request_timeout=30)
        listing = json.loads(response.data)
        nodes = {}
        for node in listing.get("items") or []:
            entry = node_entry(node)
            if entry is not None:
                nodes[str(node["metadata"]["name"])] = entry
        with self._lock:
            self._nodes, self._groups = nodes, None
        self._synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                version = self._list()
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                while not self._stopped.is_set():
                    for event in self._watch.stream(
                        self._core.list_node,
                        resource_version=version,
                        timeout_seconds=_WATCH_SECONDS,
                        allow_watch_bookmarks=True,
                        deserialize=False,
                    ):
                        node = event["object"]
                        version = str(node.get("metadata", {}).get("resourceVersion") or version)
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self._apply(event["type"], node)
            except client.ApiException as exc:
                if exc.status != _GONE:
                    log.warning("watching Nodes failed (HTTP %s %s); listing again", exc.status, exc.reason)
            except Exception as exc:  # noqa: BLE001 - the view must outlive any API trouble
                log.warning("watching Nodes failed (%s: %s); listing again", type(exc).__name__, exc)
            self._stopped.wait(self._retry)
