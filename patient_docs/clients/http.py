"""Status codes become typed errors here, once, for both REST services."""

from __future__ import annotations

import httpx

from patient_docs.errors import NotFound, PermanentError, RateLimited, TransientError


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def check(service: str, response: httpx.Response) -> httpx.Response:
    """Return the response if it succeeded, else raise the typed error its status means."""
    code = response.status_code
    if code < 400:
        return response
    where = f"{response.request.method} {response.request.url.path} -> {code}"
    if code == 429:
        raise RateLimited(service, where, retry_after=retry_after(response))
    if code == 404:
        raise NotFound(service, where)
    if code in (408, 425) or code >= 500:
        raise TransientError(service, where, retry_after=retry_after(response))
    raise PermanentError(service, f"{where}: {response.text[:200]}")


async def request(service: str, client: httpx.AsyncClient, method: str, url: httpx.URL, **kwargs: object) -> httpx.Response:
    """Send one request; transport failures (refused, dropped, timed out) become TransientError."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise TransientError(service, f"{method} {url.path}: {type(exc).__name__}: {exc}") from exc
    return check(service, response)
