from __future__ import annotations

import pytest

from edge.jobs.webhook_urls import UnsafeWebhookUrl, check_resolved_host, check_webhook_url


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/hooks",
        "https://app.example.com:8443/hooks?x=1",
        "https://93.184.216.34/hook",
        "https://[2606:4700::1111]/hook",
    ],
)
def test_public_https_urls_are_allowed(url: str) -> None:
    check_webhook_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://app.example.com/hooks", "https"),
        ("ftp://app.example.com/", "https"),
        ("//app.example.com/", "https"),
        ("https://user:pw@app.example.com/", "credentials"),
        ("https://localhost/hook", "local"),
        ("https://api.localhost/hook", "local"),
        ("https://printer.local/hook", "local"),
        ("https://metadata.google.internal/computeMetadata", "local"),
        ("https://127.0.0.1/", "public"),
        ("https://127.1/", "public"),
        ("https://2130706433/", "public"),
        ("https://0x7f000001/", "public"),
        ("https://0177.0.0.1/", "public"),
        ("https://0/", "public"),
        ("https://10.0.0.5/", "public"),
        ("https://172.16.3.4/", "public"),
        ("https://192.168.1.1/", "public"),
        ("https://100.64.0.1/", "public"),
        ("https://169.254.169.254/latest/meta-data", "public"),
        ("https://[::1]/", "public"),
        ("https://[::ffff:127.0.0.1]/", "public"),
        ("https://[::ffff:169.254.169.254]/", "public"),
        ("https://[fd00::1]/", "public"),
        ("https://[fe80::1]/", "public"),
        ("https://[::ffff:0:7f00:1]/", "public"),
        ("https://[::7f00:1]/", "public"),
        ("https://[64:ff9b::a9fe:a9fe]/", "public"),
        ("https://[2002:a9fe:a9fe::]/", "public"),
        ("https://%31%32%37.0.0.1/", "percent"),
        ("https://127.0.0.1\\.example.com/", "backslash"),
        ("https://localhost%2e/", "percent"),
        ("https://0x/", "malformed"),
        ("https://\u2603.net/hook", "ASCII"),
        ("https://\uff11\uff12\uff17.0.0.1/", "ASCII"),
        ("https://224.0.0.1/", "public"),
        ("https://999.1.1.1/", "malformed"),
        ("https://app.example.com:0/", "port"),
        ("https://app.example.com:99999/", "valid URL"),
        ("https://" + "a" * 2050 + ".com/", "longer"),
    ],
)
def test_unsafe_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=why):
        check_webhook_url(url)


def test_local_mode_admits_loopback_http_only() -> None:
    check_webhook_url("http://127.0.0.1:9000/hook", allow_loopback_http=True)
    check_webhook_url("http://[::1]:9000/hook", allow_loopback_http=True)
    with pytest.raises(UnsafeWebhookUrl):
        check_webhook_url("http://app.example.com/hook", allow_loopback_http=True)
    with pytest.raises(UnsafeWebhookUrl):
        check_webhook_url("http://10.0.0.1/hook", allow_loopback_http=True)
    with pytest.raises(UnsafeWebhookUrl):
        check_webhook_url("http://127.0.0.1:9000/hook")


async def test_resolved_addresses_are_checked_too() -> None:
    await check_resolved_host("localhost", 443, allow_loopback=True)
    with pytest.raises(UnsafeWebhookUrl, match="not a public address"):
        await check_resolved_host("localhost", 443)
    with pytest.raises(UnsafeWebhookUrl, match="does not resolve"):
        await check_resolved_host("no-such-host.invalid", 443)


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/hooks\u0000",
        "https://app.example.com/ho\x07oks",
        "https://app.example.com/hooks\x7f",
        "https://app.example.com/ho\u0085oks",
        "https://app.example.com/hooks\n",
        "https://app.example.com/ho oks",
        "https://app.example.com/hooks\t",
        " https://app.example.com/hooks",
        "https://exa mple.com/",
        "https://app.example.com/hooks\u00a0",
        "https://app.example.com/hooks\u2028",
        "https://app.example.com/hooks\u200b",
        "https://app.example.com/hooks\u202e",
        "https://app.example.com/hooks\ud800",
    ],
)
def test_control_characters_and_whitespace_are_refused(url: str) -> None:
    """Every later delivery would fail on them (`invalid_url`), or go to a URL other than
    the one the client sees: refused when the URL is given."""
    with pytest.raises(UnsafeWebhookUrl, match="control characters or whitespace"):
        check_webhook_url(url, allow_loopback_http=True)
