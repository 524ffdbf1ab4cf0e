"""Our Standard Webhooks signing against the reference `standardwebhooks` package."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.signing import SignatureError, new_secret, sign, signed_headers, verify

NOW = 1_800_000_000
BODY = json.dumps({"type": "job.succeeded", "data": {"id": "job_1"}}).encode()


def test_new_secrets_are_whsec_and_32_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_the_reference_library_accepts_our_signature() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_1", int(datetime.now(UTC).timestamp()), BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_we_accept_the_reference_library_signature() -> None:
    secret = new_secret()
    stamp = datetime.fromtimestamp(NOW, UTC)
    signature = Webhook(secret).sign("msg_2", stamp, BODY.decode())
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    assert verify(secret, headers, BODY, now=NOW) == "msg_2"
    assert signature == sign(secret, "msg_2", NOW, BODY)


def test_rotation_any_listed_signature_may_match() -> None:
    old, new = new_secret(), new_secret()
    both = f"{sign(old, 'm', NOW, BODY)} {sign(new, 'm', NOW, BODY)}"
    headers = {"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": both}
    assert verify(new, headers, BODY, now=NOW) == "m"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b'{"tampered": true}'}, "no signature matches"),
        ({"now": NOW + 301}, "tolerance"),
        ({"now": NOW - 301}, "tolerance"),
        ({"secret": "other"}, "no signature matches"),
        ({"drop": "webhook-id"}, "missing"),
        ({"timestamp": "soon"}, "malformed"),
        ({"timestamp": "\u00b2"}, "malformed"),
    ],
)
def test_bad_signatures_are_refused(change: dict, message: str) -> None:
    secret = new_secret()
    headers = signed_headers(secret, "m", NOW, BODY)
    if "drop" in change:
        del headers[change["drop"]]
    if "timestamp" in change:
        headers["webhook-timestamp"] = change["timestamp"]
    key = new_secret() if change.get("secret") else secret
    with pytest.raises(SignatureError, match=message):
        verify(key, headers, change.get("body", BODY), now=change.get("now", NOW))
    if "body" in change:  # the reference library agrees
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(change["body"], signed_headers(secret, "m", NOW, BODY))


def test_a_malformed_secret_is_a_signature_error() -> None:
    with pytest.raises(SignatureError, match="base64"):
        sign("whsec_***", "m", NOW, BODY)


def test_a_timestamp_too_long_for_int_is_a_signature_error() -> None:
    headers = {"webhook-id": "m", "webhook-timestamp": "9" * 5000, "webhook-signature": "v1,x"}
    with pytest.raises(SignatureError):
        verify("whsec_" + "A" * 32, headers, b"{}", now=0)
