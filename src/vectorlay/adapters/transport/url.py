"""Which control-plane URLs the agent may use, and how they appear in messages."""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

import httpx

from vectorlay.errors import ConfigError, InsecureURL


def check_url(url: str, *, insecure: bool) -> None:
    """Refuse a control-plane URL the agent must never use.

    ``ConfigError`` for anything but an absolute ``ws://`` or ``wss://`` URL
    with a host; ``InsecureURL`` for ``ws://`` to a host outside the loopback
    interface (``127.0.0.0/8``, ``::1``, ``localhost``) unless ``insecure``.
    Messages name the scheme and host, never the whole URL.
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ConfigError(f"control plane URL must start with ws:// or wss:// (got {shown})")
    host = parts.hostname
    if not host:
        raise ConfigError("control plane URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("control plane URL must not carry a user name or password")
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"control plane URL for host {host} is invalid: {exc}") from None
    if scheme == "ws" and not insecure and not is_loopback(host):
        raise InsecureURL(
            f"refusing unencrypted ws:// to {host}, which is not a loopback address: "
            "use wss://, or pass --insecure to allow it"
        )


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (also as ``::ffff:127.x.y.z``)."""
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_tls(url: str) -> bool:
    """Whether a checked URL is ``wss://``."""
    return urlsplit(url.strip()).scheme.lower() == "wss"


def origin(url: str) -> str:
    """``scheme://host:port`` of a checked URL, for messages."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "wss" else 80)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ConfigError(f"control plane URL is invalid: {exc}") from None
    return parts
