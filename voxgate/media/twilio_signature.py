"""``X-Twilio-Signature`` for voice webhooks: compute and validate.

Signature = base64(HMAC-SHA1(auth token, URL + each POST parameter's name and
value concatenated, parameters sorted by name)). Parameters with empty values
are part of it; a repeated parameter contributes every value (sorted, so the
order the form listed them in does not matter). Twilio may sign the URL with
or without an explicit port, so validation accepts either form. Comparison
is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Params", "compute_signature", "url_variants", "validate_signature"]

Params = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _pairs(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    pairs: list[tuple[str, str]] = []
    if isinstance(params, Mapping):
        for name, value in params.items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                pairs.extend((name, v) for v in value)
    else:
        pairs.extend((name, value) for name, value in params)
    return pairs


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """Base64 HMAC-SHA1 signature Twilio would send for this request."""
    message = url + "".join(name + value for name, value in sorted(_pairs(params)))
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """The URL as given, plus the same URL with the port toggled.

    With no port the default one is added; with a port (default or not) it is
    removed, because what Twilio signed depends on how the webhook URL was
    configured.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    try:
        port = parts.port
    except ValueError:
        return [url]
    if port is None:
        default = _DEFAULT_PORTS.get(parts.scheme.lower())
        if default is None:
            return [url]
        other = parts._replace(netloc=f"{prefix}{host}:{default}")
    else:
        other = parts._replace(netloc=f"{prefix}{host}")
    return [url, urlunsplit(other)]


def validate_signature(
    auth_token: str, url: str, params: Params | None, signature: str | None
) -> bool:
    """True if ``signature`` matches the URL with or without its port."""
    if not signature or not auth_token:
        return False
    given = signature.strip().encode()
    pairs = _pairs(params)
    ok = False
    for candidate in url_variants(url):
        expected = compute_signature(auth_token, candidate, pairs).encode()
        # Evaluate every variant (no early exit) so timing reveals nothing.
        ok |= hmac.compare_digest(expected, given)
    return ok
