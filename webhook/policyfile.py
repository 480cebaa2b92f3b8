"""Reading the policy file (YAML) from disk, once or whenever it changes."""

from __future__ import annotations

import logging
import os
import threading
import time

import yaml

from webhook.errors import ConfigError
from webhook.manifests import yaml_problem
from webhook.policy import Policy

log = logging.getLogger(__name__)


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
    return Policy.from_mapping(data, source=path)


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

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

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
