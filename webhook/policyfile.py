"""Reading the policy file (YAML) from disk, once or whenever it changes."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace

import yaml

from webhook.errors import ConfigError
from webhook.files import FileStamp, file_stamp
from webhook.manifests import yaml_problem
from webhook.nodeconfig import (
    ContainerdHosts,
    CrioRegistries,
    HostsEntry,
    NodeConfig,
    parse_hosts_toml,
    parse_registries_conf,
)
from webhook.policy import Policy

log = logging.getLogger(__name__)
_NODE_FILE_CAP = 1 << 20  # characters; node registry files are a few KiB


def load_policy(path: str | None) -> Policy:
    """The policy in `path`, or the defaults when no path is given; ConfigError names what is wrong."""
    if path is None:
        return Policy()
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the policy file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {yaml_problem(exc, 'not valid YAML')}") from None
    policy = Policy.from_mapping(data, source=path)
    return replace(policy, node=load_node_config(policy.node))


def load_node_config(node: NodeConfig) -> NodeConfig:
    """The node files the policy names, read and checked now (a bad one is one ConfigError line)."""
    return replace(
        node,
        containerd=None if node.containerd_hosts_dir is None else load_hosts_dir(node.containerd_hosts_dir),
        crio=None if node.crio_registries_conf is None else load_registries_conf(node.crio_registries_conf),
    )


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(_NODE_FILE_CAP + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text") from None


def _bounded(text: str, path: str) -> str:
    if len(text) > _NODE_FILE_CAP:
        raise ConfigError(f"{path}: over {_NODE_FILE_CAP} characters; not a registry configuration")
    return text


def load_hosts_dir(directory: str) -> ContainerdHosts:
    """A containerd certs.d directory: each `<namespace>/hosts.toml`, or its `*.crt` files without one."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    except OSError as exc:
        raise ConfigError(
            f"{directory}: cannot read the containerd hosts directory: {exc.strerror or exc}"
        ) from None
    namespaces = {}
    for name in names:
        base = os.path.join(directory, name)
        hosts_file = os.path.join(base, "hosts.toml")
        if os.path.exists(hosts_file):
            text = _bounded(_read_text(hosts_file, "hosts.toml"), hosts_file)
            if text:
                namespaces[name] = parse_hosts_toml(text, hosts_file, base)
                continue
        # containerd's loadCertFiles: Docker's layout, CA files only (client certificates are not ours to use)
        cas = tuple(sorted(os.path.join(base, f) for f in os.listdir(base) if f.endswith(".crt")))
        namespaces[name] = (HostsEntry(ca_files=cas),)
    return ContainerdHosts(directory, namespaces)


def load_registries_conf(path: str) -> CrioRegistries:
    return parse_registries_conf(_bounded(_read_text(path, "registries.conf"), path), path)


class PolicyFile:
    """The current policy of a file that may change while the process runs.

    The file is looked at no more often than every `interval` seconds; a changed file that does not
    validate is reported once and the last good policy stays in force."""

    def __init__(self, path: str | None, interval: float = 2.0) -> None:
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._policy = load_policy(path)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def _file_stamp(self) -> FileStamp | None:
        if self.path is None:
            return None
        try:
            return file_stamp(self.path)
        except OSError:
            return None

    def current(self) -> Policy:
        if self.path is None or time.monotonic() - self._checked < self.interval:
            return self._policy
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp is None or stamp == self._stamp:
                return self._policy
            self._stamp = stamp
            try:
                self._policy = load_policy(self.path)
                log.info("policy reloaded from %s", self.path)
            except ConfigError as exc:
                log.error("policy change ignored, keeping the last good policy: %s", exc)
            return self._policy
