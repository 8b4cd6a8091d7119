"""An organisation's own containment API over HTTP(S), with httpx.

Header values written `secret:NAME` are resolved here, at the moment of sending, from
BREACHBOOK_HTTP_SECRETS; nothing that comes back out (status codes, errors) carries them,
and no response body is ever quoted (it may hold personal data)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from pydantic import SecretStr

from breachbook.errors import ContainmentRefused
from breachbook.ports import HttpCall

SECRET_PREFIX = "secret:"
SAFE_METHODS = frozenset({"GET", "HEAD"})
SECRETS_SETTING = "BREACHBOOK_HTTP_SECRETS"


class HttpxClient:
    """HTTP requests with a timeout, no redirects followed, secrets resolved per request."""

    def __init__(self, secrets: Mapping[str, SecretStr], timeout: float = 10.0) -> None:
        self._secrets = dict(secrets)
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def describe(self) -> str:
        return f"HTTP client ({len(self._secrets)} secrets from {SECRETS_SETTING})"

    def _headers(self, call: HttpCall) -> dict[str, str]:
        headers = {}
        for name, value in call.headers.items():
            if value.startswith(SECRET_PREFIX):
                key = value.removeprefix(SECRET_PREFIX)
                secret = self._secrets.get(key)
                if secret is None:
                    raise ContainmentRefused(
                        f"header {name}: secret {key} is not in {SECRETS_SETTING}"
                    )
                headers[name] = secret.get_secret_value()
            else:
                headers[name] = value
        return headers

    def _request(self, call: HttpCall) -> int:
        try:
            response = self._client.request(
                call.method,
                call.url,
                headers=self._headers(call),
                content=None if call.body is None else call.body.encode(),
            )
        except httpx.HTTPError as exc:
            raise ContainmentRefused(
                f"{call.method} {call.url} failed: {type(exc).__name__}"
            ) from None
        return response.status_code

    def probe(self, call: HttpCall) -> int:
        if call.method.upper() not in SAFE_METHODS:
            raise ContainmentRefused(f"a health check is GET or HEAD, not {call.method}")
        return self._request(call)

    def send(self, call: HttpCall) -> int:
        return self._request(call)
