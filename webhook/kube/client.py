"""Connecting to the API server: in-cluster service account, or a kubeconfig file.

Every request of the clients made here fails, when the server cannot be reached, with one ClusterError
line naming the server and the cause (`cannot reach the API server https://…: connection refused`),
never the HTTP library's internals.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import urllib3
import yaml
from kubernetes import client, config

from webhook.errors import ClusterError, ConfigError, network_cause

log = logging.getLogger(__name__)


def unreachable(server: str, error: BaseException) -> ClusterError:
    """The one line for an API server that did not answer over HTTP."""
    cause = network_cause(error) or " ".join(str(error).split()) or type(error).__name__
    return ClusterError(f"cannot reach the API server {server}: {cause}")


class _ReadableRest:
    """The client's REST layer (the one place every request and watch goes through), with transport
    failures read as ClusterError. HTTP errors stay ApiException: callers tell a 403 from an outage."""

    def __init__(self, rest: Any, server: str) -> None:
        self._rest = rest
        self._server = server

    def request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._rest.request(*args, **kwargs)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise unreachable(self._server, error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rest, name)


def api_client(
    kubeconfig: str | None,
    *,
    in_cluster: bool = False,
    context: str | None = None,
    warn: Callable[[str], None] = log.warning,
) -> client.ApiClient:
    """An API client; ConfigError (one line) when the credentials cannot be loaded. A kubeconfig that
    turns off TLS verification is said once through `warn`, not by urllib3 on every request."""
    configuration = client.Configuration()
    where = "the in-cluster service account" if in_cluster else (kubeconfig or "the default kubeconfig")
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"cannot use {where} to reach the Kubernetes API: {exc}") from None
    except yaml.YAMLError as exc:
        # Not the parser's message: it may quote the line, and a kubeconfig line may hold a token.
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"cannot use {where} to reach the Kubernetes API: not valid YAML{line}") from None
    except (TypeError, AttributeError, KeyError):
        # The loader indexes the document without checking its shape first.
        raise ConfigError(
            f"cannot use {where} to reach the Kubernetes API: not a kubeconfig (unexpected structure)"
        ) from None
    if not configuration.verify_ssl:
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        warn(f"{where} turns off TLS verification: the identity of {configuration.host} is not checked")
    api = client.ApiClient(configuration)
    api.rest_client = _ReadableRest(api.rest_client, configuration.host)  # type: ignore[assignment]
    return api
