"""The admin token: what admin calls (model load and unload, and later lifecycle calls) check.

A call proves it may administer the gateway with ``authorization: Bearer <token>`` in its
metadata, compared in constant time. No token configured: admin calls are off
(FAILED_PRECONDITION); none sent: UNAUTHENTICATED; another one: PERMISSION_DENIED. The token
is never logged, echoed or put in an error.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterable

from ..api import GatewayError, Status

METADATA_KEY = "authorization"
SCHEME = "bearer"


class AdminToken:
    """``secret`` None or empty: admin calls are off."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str | None) -> None:
        self._secret = secret.encode() if secret else None

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def __repr__(self) -> str:
        return f"AdminToken({'set' if self._secret is not None else 'off'})"

    def check(self, metadata: Iterable[tuple[str, str | bytes]] | None, what: str) -> None:
        """Raise unless ``metadata`` carries the token; ``what`` names the call in the error."""
        secret = self._secret
        if secret is None:
            raise GatewayError(Status.FAILED_PRECONDITION, f"{what} is an admin call, and admin calls are off: "
                               "no admin token is set (admin_token_file or GATEWAY_ADMIN_TOKEN)")
        sent = [v for k, v in (metadata or ()) if k.lower() == METADATA_KEY]
        if not sent:
            raise GatewayError(Status.UNAUTHENTICATED, f"{what} is an admin call: send the admin token as "
                               f"'{METADATA_KEY}: Bearer <token>' metadata")
        value = sent[-1]
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        scheme, _, token = raw.strip().partition(b" ")
        if scheme.lower() != SCHEME.encode() or not hmac.compare_digest(token.strip(), secret):
            raise GatewayError(Status.PERMISSION_DENIED, f"{what}: the admin token sent is not the gateway's")
