"""Connecting to the API server: in-cluster service account, or a kubeconfig file."""

from __future__ import annotations

import yaml
from kubernetes import client, config

from webhook.errors import ConfigError


def api_client(
    kubeconfig: str | None, *, in_cluster: bool = False, context: str | None = None
) -> client.ApiClient:
    """An API client; ConfigError (one line) when the credentials cannot be loaded."""
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
    return client.ApiClient(configuration)
