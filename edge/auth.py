"""API-key authentication: `Authorization: Bearer <key>`, one tenant per key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


class ApiKeys:
    """Resolves a presented key to its tenant in time that does not depend on the key."""

    def __init__(self, keys_to_tenants: Mapping[str, str]) -> None:
        # Keep only digests: equal-length values make compare_digest's timing uniform.
        self._entries = [(_digest(key), tenant) for key, tenant in keys_to_tenants.items()]

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of a `Bearer` header value, or None when it is missing or unknown."""
        key = bearer_token(authorization)
        if key is None:
            return None
        presented = _digest(key)
        tenant: str | None = None
        for digest, owner in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, digest):
                tenant = owner
        return tenant


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, case-insensitive scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
