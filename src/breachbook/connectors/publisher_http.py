"""Publishing an approved statement to an HTTP status page or newsroom endpoint, with httpx.

The request, one per language of one approved version:

    POST BREACHBOOK_PUBLISHER_URL
    Authorization: Bearer BREACHBOOK_PUBLISHER_TOKEN      (when the token is set)
    Idempotency-Key: INCIDENT:STATEMENT-vN:LANGUAGE        (the same on every retry)
    Content-Type: application/json
    {"incident_id", "statement", "version", "language", "title", "body", "sha256"}

A 2xx answer is published; its JSON `url` (else `id`, else the status) is recorded. A 429 or
5xx answer, a timeout or a dropped connection is retried after 1, 4 and 16 s; another 4xx
fails the item, naming the status, and a later run tries again. The key
makes a retry after a timeout safe: the endpoint is expected to answer a repeated key with
the first answer, not publish twice (the ledger also claims each version and language once).
The readiness check, a drill's only call, is `GET` of the same URL with the token: 2xx (or
405, a POST-only endpoint that still authenticated the token) is VERIFIED. No response body
is ever quoted in an error or the ledger.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from breachbook.errors import BreachbookError
from breachbook.ports import Check, StatementRelease

URL_SETTING = "BREACHBOOK_PUBLISHER_URL"
READY = frozenset({405})
"""Statuses of the readiness GET that still mean the endpoint is there and took the token."""


class PublishRefused(BreachbookError):
    """The endpoint refused the publish request (a 4xx but 429): retrying will not help."""


class PublisherBusy(Exception):
    """The endpoint answered 429 or 5xx: a passing error, which the ledger retries with back-off
    (1, 4, 16 s) under the same Idempotency-Key. Not a BreachbookError on purpose."""


class HttpPublisher:
    """POSTs each statement release as JSON, bearer token and idempotency key attached."""

    def __init__(
        self,
        url: str,
        token: SecretStr | None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = url
        self._token = token
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, transport=transport)

    def describe(self) -> str:
        return f"HTTP publisher {self._url}"

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            return {}
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    def check_can_publish(self) -> Check:
        method = f"GET {self._url}"
        try:
            response = self._client.get(self._url, headers=self._headers())
        except httpx.HTTPError as exc:
            return Check.failed(f"{self._url} did not answer: {type(exc).__name__}", method)
        status = response.status_code
        if response.is_success or status in READY:
            return Check.verified(f"{self._url} answered HTTP {status}", method)
        if status in (401, 403):
            return Check.failed(
                f"{self._url} refused the token (HTTP {status}): check BREACHBOOK_PUBLISHER_TOKEN",
                method,
            )
        return Check.failed(f"{self._url} answered HTTP {status}", method)

    def publish(self, release: StatementRelease) -> str:
        """One POST; a dropped connection or timeout raises httpx's error, which the ledger's
        retry repeats with the same Idempotency-Key."""
        response = self._client.post(
            self._url,
            headers={**self._headers(), "Idempotency-Key": release.idempotency_key},
            json={
                "incident_id": release.incident_id,
                "statement": release.statement,
                "version": release.version,
                "language": release.language,
                "title": release.title,
                "body": release.body,
                "sha256": release.sha256,
            },
        )
        status = response.status_code
        if status == 429 or status >= 500:
            raise PublisherBusy(f"{self._url} answered HTTP {status}")
        if not response.is_success:
            raise PublishRefused(
                f"{self._url} answered HTTP {response.status_code} to "
                f"{release.statement} v{release.version} ({release.language})"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            for name in ("url", "id"):
                value = answer.get(name)
                if isinstance(value, str | int) and str(value):
                    return str(value)[:500]
        return f"HTTP {response.status_code}"
