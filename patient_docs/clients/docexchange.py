"""DocumentExchange: start a search, poll it, download its archive."""

from __future__ import annotations

from pathlib import Path

import httpx

from patient_docs.clients.http import check, request
from patient_docs.errors import TransientError, UnsafeArchiveUrl
from patient_docs.models import SearchJob

SERVICE = "DocumentExchange"


class DocExchangeClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str):
        self._http = http
        self._base = httpx.URL(base_url)

    async def start_search(self, first_name: str, last_name: str) -> str:
        """POST /v1/searches; return the job id."""
        body = {"first_name": first_name, "last_name": last_name}
        response = await self._request("POST", "/v1/searches", json=body)
        return SearchJob.model_validate(response.json()).job_id

    async def job(self, job_id: str) -> SearchJob:
        """GET /v1/searches/{job_id}."""
        response = await self._request("GET", f"/v1/searches/{job_id}")
        return SearchJob.model_validate(response.json())

    def check_archive_url(self, archive_url: str) -> httpx.URL:
        """Refuse, without sending anything, a URL not on the configured service's scheme, host and port."""
        url = httpx.URL(archive_url)
        same = (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port)
        if not same or not url.path.startswith("/v1/archives/"):
            raise UnsafeArchiveUrl(SERVICE, f"archive URL {archive_url!r} is not on {self._base}")
        return url

    async def download(self, archive_url: str, dest: Path) -> int:
        """Stream the archive to `dest`; return its size in bytes."""
        url = self.check_archive_url(archive_url)
        size = 0
        try:
            async with self._http.stream("GET", url) as response:
                if response.is_redirect:  # never followed: it could lead anywhere
                    raise UnsafeArchiveUrl(SERVICE, f"GET {url.path} -> {response.status_code} redirect refused")
                check(SERVICE, response)
                with dest.open("wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as exc:
            raise TransientError(SERVICE, f"GET {url.path}: {type(exc).__name__}: {exc}") from exc
        return size

    async def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return await request(SERVICE, self._http, method, self._base.join(path), **kwargs)
