"""Serving the WSGI app with gunicorn (gthread workers, keep-alive) over TLS 1.2+, run in-process.

The certificate and key are looked at on every new connection and re-read when either file changed,
so a rotated Secret is served without a restart; connections already open keep their session.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication

from webhook.errors import ConfigError
from webhook.logs import logging_config

log = logging.getLogger(__name__)

WSGIApp = Callable[..., Any]


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    cert_file: str
    key_file: str
    workers: int = 1  # processes; each has its own caches and node view
    threads: int = 16  # concurrent admissions per process
    keepalive: int = 75  # seconds; the apiserver reuses its connections
    timeout: int = 60  # a worker silent for this long is restarted
    log_level: str = "INFO"


def _stamp(path: str) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino


class CertificateReloader:
    """A server SSLContext for the current certificate and key files.

    A context is never changed once built: a new one replaces it, so a handshake never sees a new
    certificate with the old key. A half-written pair (the key updated before the certificate) fails
    to load; the old context stays until the next connection finds a pair that loads."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._lock = threading.Lock()
        try:
            self._stamps = (_stamp(cert_file), _stamp(key_file))
            self._context = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot serve TLS with {cert_file} and {key_file}: {exc}") from None

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def context(self) -> ssl.SSLContext:
        try:
            stamps = (_stamp(self.cert_file), _stamp(self.key_file))
        except OSError:
            return self._context  # mid-rotation: a file is briefly missing
        if stamps == self._stamps:
            return self._context
        with self._lock:
            if stamps != self._stamps:
                try:
                    self._context = self._build()
                    self._stamps = stamps
                    log.info("serving the new certificate from %s", self.cert_file)
                except (OSError, ssl.SSLError) as exc:
                    log.warning("new certificate not loaded yet (%s); serving the previous one", exc)
            return self._context


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: ServerOptions, app_factory: Callable[[], WSGIApp]) -> None:
        self.options = options
        self.app_factory = app_factory
        self.reloader = CertificateReloader(options.cert_file, options.key_file)
        super().__init__()

    def load_config(self) -> None:
        reloader = self.reloader
        settings: dict[str, Any] = {
            "bind": [
                f"[{self.options.host}]:{self.options.port}"
                if ":" in self.options.host
                else f"{self.options.host}:{self.options.port}"
            ],
            "worker_class": "gthread",
            "workers": self.options.workers,
            "threads": self.options.threads,
            "keepalive": self.options.keepalive,
            "timeout": self.options.timeout,
            "graceful_timeout": 10,
            "certfile": self.options.cert_file,
            "keyfile": self.options.key_file,
            "ssl_context": lambda _config, _default: reloader.context(),
            "logconfig_dict": logging_config(self.options.log_level),
            "accesslog": None,
            "preload_app": False,  # each worker builds its own app: threads do not survive a fork
            "proc_name": "pullcheck",
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        return self.app_factory()


def serve(options: ServerOptions, app_factory: Callable[[], WSGIApp]) -> int:
    """Serve until SIGTERM or SIGINT; the exit status of the server."""
    application = _Gunicorn(options, app_factory)
    try:
        application.run()
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0
