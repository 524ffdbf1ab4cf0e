"""Which webhook URLs edgecrew will post to: public https endpoints only.

Checked when a job is created and again before every delivery, so a job cannot be used
to reach private networks, loopback, link-local or cloud metadata addresses, whatever the
spelling of the address (decimal, octal, hex, short forms, IPv4-mapped IPv6).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
_HOSTNAME = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*$")  # ASCII (punycode for IDNs) only
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_BLOCKED_NAMES = re.compile(r"(^|\.)(localhost|local|internal|localdomain|home\.arpa)$")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeWebhookUrl(ValueError):
    """The URL is not one edgecrew may call; the message says why."""


class HostDoesNotResolve(UnsafeWebhookUrl):
    """The host name has no address now: nothing to check, nor to call. Unlike the other
    refusals this can change (a DNS outage, a record not yet published), so a delivery
    is tried again later."""


def check_webhook_url(url: str, *, allow_loopback_http: bool = False) -> None:
    """Raise UnsafeWebhookUrl unless `url` is an https URL of a public host.

    `allow_loopback_http` (local mode only) also admits http and https to loopback.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"longer than {MAX_URL_LENGTH} characters")
    if any(_invisible(c) for c in url):
        # Accepted, they would make every delivery fail (no HTTP client sends them), or
        # be dropped on the way (urlsplit strips tabs and newlines) to another URL.
        raise UnsafeWebhookUrl("must not contain control characters or whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"not a valid URL: {exc}") from None
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in {"https", "http"} or not host:
        raise UnsafeWebhookUrl("must be an absolute https:// URL")
    if "%" in parts.netloc or "\\" in url:
        raise UnsafeWebhookUrl("percent-encoded hosts and backslashes are not allowed")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookUrl("must not carry credentials; sign requests with the secret")
    if port == 0:
        raise UnsafeWebhookUrl("port 0 is not a port")
    address = literal_address(host)
    loopback = address is not None and address.is_loopback
    if parts.scheme == "http" and not (allow_loopback_http and loopback):
        raise UnsafeWebhookUrl("must use https (plain http only to loopback in local mode)")
    if address is None:
        if not _HOSTNAME.match(host):
            raise UnsafeWebhookUrl(f"{host!r} is not an ASCII host name (use punycode)")
        if _BLOCKED_NAMES.search(host):
            raise UnsafeWebhookUrl(f"{host!r} names a local or internal host")
        return
    check_address(address, allow_loopback=allow_loopback_http)


def _invisible(char: str) -> bool:
    """Controls, format characters (zero-width, bidi overrides), lone surrogates and
    whitespace of any kind: nothing a URL may carry unencoded."""
    return char.isspace() or unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"}


def check_address(address: IpAddress, *, allow_loopback: bool = False) -> None:
    """Raise unless the address is globally routable (or loopback, when allowed)."""
    for embedded in _embedded_ipv4(address):
        check_address(embedded, allow_loopback=allow_loopback)
    if address.is_loopback and allow_loopback:
        return
    if not address.is_global or address.is_multicast:
        raise UnsafeWebhookUrl(f"{address} is not a public address")


def _embedded_ipv4(address: IpAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, translated, compatible, 6to4,
    Teredo, NAT64): each must pass on its own."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.append(address.teredo[1])
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    high96 = int(address) >> 32
    compatible = high96 == 0 and int(address) > 1  # ::a.b.c.d, but not :: or ::1
    if address in _NAT64 or compatible or high96 == 0xFFFF0000:  # NAT64, compat., translated
        found.append(low32)
    return found


async def check_resolved_host(host: str, port: int, *, allow_loopback: bool = False) -> list[str]:
    """Resolve `host` (without blocking the event loop), check every address it has and
    return them, in the resolver's order, to connect to.

    CPython only, as the DNS-rebinding guard of local mode: the caller connects to these
    addresses (`pinned_url`), so a second lookup cannot swap in a private one.
    """
    infos = await _resolve(host, port)
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise HostDoesNotResolve(f"{host!r} does not resolve")
    for address in addresses:
        check_address(address, allow_loopback=allow_loopback)
    return [str(address) for address in addresses]


async def _resolve(host: str, port: int) -> list[Any]:
    try:
        return list(
            await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        )
    except OSError as exc:
        raise HostDoesNotResolve(f"{host!r} does not resolve: {exc}") from None


def pinned_url(url: str, address: str) -> tuple[str, str]:
    """`url` with its host replaced by the checked `address`; also the Host header value."""
    parts = urlsplit(url)
    userinfo, at, host_header = parts.netloc.rpartition("@")
    literal = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{literal}{port}")), host_header


def literal_address(host: str) -> IpAddress | None:
    """The IP a host names literally, in any spelling inet_aton accepts; None for names."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if not _NUMERIC_HOST.match(host):
        return None
    try:  # 127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1 ... all mean an IPv4 address
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        raise UnsafeWebhookUrl(f"{host!r} is a malformed IP address") from None
