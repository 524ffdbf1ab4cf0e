"""Standard Webhooks signatures (https://www.standardwebhooks.com), both directions.

Hand-written on purpose: the `standardwebhooks` package pulls in httpx, attrs and
python-dateutil, too much for the Pyodide Worker for what is one HMAC. The tests check
this module against that package in both directions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
TOLERANCE_SECONDS = 5 * 60


class SignatureError(ValueError):
    """The message is not signed by the expected secret, or too old or too new."""


def new_secret() -> str:
    """A fresh `whsec_` secret: 32 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: int) -> str:
    """Check the headers against the body; returns the message id or raises SignatureError."""
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id", "")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    # isascii: "²".isdigit() is True, and int() would then raise outside our error type.
    if (
        not message_id
        or not (raw_timestamp.isascii() and raw_timestamp.isdigit())
        or len(raw_timestamp) > 12  # Python refuses int() of > 4,300 digits; 12 is year 33658
        or not signatures
    ):
        raise SignatureError("missing or malformed webhook-id/timestamp/signature headers")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError("timestamp outside the 5-minute tolerance")
    expected = sign(secret, message_id, timestamp, body).encode()
    # Several space-separated signatures are allowed (secret rotation); one match is enough.
    if not any(hmac.compare_digest(expected, s.encode()) for s in signatures.split(" ")):
        raise SignatureError("no signature matches")
    return message_id


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise SignatureError("the secret is not base64 after its whsec_ prefix") from None


def derived_secret(master_key: str, purpose: str) -> str:
    """A stable `whsec_` secret for one purpose (e.g. one tenant's webhooks) from a master key.

    Derived rather than stored: no KV write, no race between two edges creating it at once.
    """
    digest = hmac.new(master_key.encode(), purpose.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()
