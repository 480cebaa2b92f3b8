"""Connecting to the API server: in-cluster service account, or a kubeconfig file."""

from __future__ import annotations

from kubernetes import client, config

from webhook.errors import ConfigError


def api_client(
    kubeconfig: str | None, *, in_cluster: bool = False, context: str | None = None
) -> client.ApiClient:
    """An API client; ConfigError (one line) when the credentials cannot be loaded."""
    configuration = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        where = "the in-cluster service account" if in_cluster else (kubeconfig or "the default kubeconfig")
        raise ConfigError(f"cannot use {where} to reach the Kubernetes API: {exc}") from None
    return client.ApiClient(configuration)
