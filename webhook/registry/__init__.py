"""The registry adapter: the only code that speaks HTTP (httpx) to registries."""

from webhook.policy import RegistryOptions
from webhook.registry.client import ManifestHead, RegistryClient
from webhook.registry.exchange import RequestEvent

__all__ = ["ManifestHead", "RegistryClient", "RegistryOptions", "RequestEvent"]
