"""Asking a route's endpoints in order, as the runtimes do, and saying what each one answered.

containerd keeps the most telling failure (an HTTP refusal over a 404 over a connection failure, as its
resolver ranks them); containers/image reports the registry's own failure last, with its mirrors'
failures before it. Either way the message names every endpoint tried and why it did not serve.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from webhook.errors import ConfigError, DeadlineExceeded, NotFound, RegistryError, RegistryUnreachable
from webhook.policy import RegistryOptions
from webhook.registry.transport import ssl_context
from webhook.routes import Endpoint, Route

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class ConnectionFailed(RegistryUnreachable):
    """No HTTP answer at all (refused, reset, TLS failure): the case an https→http fallback retries."""


def _rank(error: RegistryError) -> int:
    """containerd's firstErrPriority: a transport failure 1, a 404 2, any other refusal 3."""
    if isinstance(error, ConnectionFailed):
        return 1
    if isinstance(error, NotFound):
        return 2
    return 3


def first_answer(
    endpoints: Sequence[Endpoint],
    attempt: Callable[[Endpoint], _T],
    where: str,
    *,
    primary_last: bool = False,
) -> tuple[_T, Endpoint]:
    """The first endpoint's answer that is not a failure, and that endpoint.

    Raises the failure the runtime would report, its message naming each endpoint and why it failed;
    `primary_last` (containers/image) reports the last endpoint's failure, else containerd's ranking."""
    if not endpoints:
        raise NotFound(f"{where}: no endpoint of the node's configuration may serve this request")
    failures: list[tuple[Endpoint, RegistryError]] = []
    for endpoint in endpoints:
        try:
            return _with_http_fallback(endpoint, attempt), endpoint
        except DeadlineExceeded:
            raise
        except RegistryError as error:
            log.info("%s did not serve %s: %s", endpoint.describe(), where, error)
            failures.append((endpoint, error))
    if len(failures) == 1:
        raise failures[0][1]
    if primary_last:
        chosen = failures[-1][1]
    else:
        chosen = max((error for _, error in failures), key=_rank)  # max keeps the first of a rank
    tried = "; ".join(f"{endpoint.describe()}: {_detail(error, where)}" for endpoint, error in failures)
    return _raise_as(chosen, f"{where}: every endpoint failed ({tried})")


def resolve_from(
    route: Route, reference: str, attempt: Callable[[Endpoint], _T], where: str
) -> tuple[_T, Endpoint]:
    """Resolving a tag or digest: the endpoints `route` allows for it, as the runtime's resolver asks."""
    endpoints = route.for_digest() if ":" in reference else route.for_tag()
    return first_answer(endpoints, attempt, where, primary_last=route.sticky)


def fetch_from(route: Route, attempt: Callable[[Endpoint], _T], where: str) -> _T:
    """Content by digest: the route's endpoints in order, as the runtime's fetcher asks them."""
    return first_answer(route.for_fetch(), attempt, where, primary_last=route.sticky)[0]


def _with_http_fallback(endpoint: Endpoint, attempt: Callable[[Endpoint], _T]) -> _T:
    if not endpoint.http_fallback:
        return attempt(endpoint)
    try:
        return attempt(endpoint)
    except ConnectionFailed:
        return attempt(replace(endpoint, scheme="http", http_fallback=False))


def _detail(error: RegistryError, where: str) -> str:
    """The error's message without the 'registry/repository: ' it starts with."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


def _raise_as(error: RegistryError, message: str) -> tuple[_T, Endpoint]:
    clone = type(error).__new__(type(error))
    clone.__dict__.update(error.__dict__)
    clone.args = (message,)
    raise clone


def endpoint_ssl_context(options: RegistryOptions) -> ssl.SSLContext:
    """The TLS settings of an endpoint: its CA files on top of the system's, or no verification."""
    context = ssl_context(options.ca_file)
    for ca_file in options.ca_files:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"{ca_file}: cannot load the CA bundle: {error}") from None
    if options.skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
