"""SIP and absolute URIs (RFC 3261 §19.1, §25.1).

:func:`parse_uri` turns text into a :class:`SipUri` (``sip:``/``sips:``) or,
for any other scheme (``tel:``, ``http:``, ``urn:``...), an opaque
:class:`AbsoluteUri`; both print back with ``str()``.

``SipUri`` keeps its components *decoded*: ``%HH`` escapes are undone exactly
once (``v%61lue%2541`` -> ``value%41``; never recursively), so a ``%00`` in a
user part is a real NUL character that does not cut the name short.  Bytes
that are not UTF-8 survive as surrogate escapes and print back unchanged.
``str()`` re-escapes each component with the character set RFC 3261 allows
there, so parse -> str -> parse is lossless.

IPv6 hosts are stored without brackets (``host == "2001:db8::1"``) so they can
go straight to a socket; ``str()`` adds the brackets back.

Parameter names are case-insensitive in SIP, so they are stored lowercased;
values keep their case.  Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Final

from voxgate.sip.errors import SipParseError

_ALPHANUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_UNRESERVED: Final = _ALPHANUM | frozenset("-_.!~*'()")
USER_CHARS: Final = _UNRESERVED | frozenset("&=+$,;?/")
PASSWORD_CHARS: Final = _UNRESERVED | frozenset("&=+$,")
PARAM_CHARS: Final = _UNRESERVED | frozenset("[]/:&+$")
HEADER_CHARS: Final = _UNRESERVED | frozenset("[]/?:+$")

_HEX: Final = frozenset("0123456789abcdefABCDEF")
_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*)")
_IPV4_RE: Final = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
# An absolute URI's opaque part: any visible character except the ones that
# would end it inside a header (<, >, quotes) or whitespace.
_OPAQUE_RE: Final = re.compile(r"[^\s<>\"]+")


def unescape(text: str, allowed: frozenset[str]) -> str:
    """Decode ``%HH`` escapes once; every other character must be in ``allowed``."""
    if "%" not in text:
        for ch in text:
            if ch not in allowed:
                raise SipParseError("Bad URI")
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            if i + 2 >= n or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
                raise SipParseError("Bad URI escape")
            hi, lo = text[i + 1], text[i + 2]
            out.append(int(hi + lo, 16))
            i += 3
            continue
        if ch not in allowed:
            raise SipParseError("Bad URI")
        out += ch.encode("utf-8", "surrogateescape")
        i += 1
    return out.decode("utf-8", "surrogateescape")


def escape(text: str, allowed: frozenset[str]) -> str:
    """Percent-encode every byte of ``text`` that is not in ``allowed``."""
    if all(ch in allowed for ch in text):
        return text
    parts: list[str] = []
    for byte in text.encode("utf-8", "surrogateescape"):
        ch = chr(byte)
        parts.append(ch if byte < 0x80 and ch in allowed else f"%{byte:02X}")
    return "".join(parts)


def parse_host(text: str) -> str:
    """Validate a host (name, IPv4, or bracketed IPv6) and return it unbracketed."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError("Bad host")
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise SipParseError("Bad host") from None
        return inner
    if _IPV4_RE.fullmatch(text):
        if any(int(octet) > 255 for octet in text.split(".")):
            raise SipParseError("Bad host")
        return text
    if not _HOSTNAME_RE.fullmatch(text):
        raise SipParseError("Bad host")
    return text


def format_host(host: str) -> str:
    """Bracket an IPv6 literal for use inside a URI or Via."""
    return f"[{host}]" if ":" in host else host


def parse_port(text: str) -> int:
    """Parse a decimal port 0-65535 without ever building a huge integer."""
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise SipParseError("Bad port")
    port = int(text)
    if port > 65535:
        raise SipParseError("Bad port")
    return port


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets) into a validated pair."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("Bad host")
        host = parse_host(text[: end + 1])
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError("Bad host")
        return host, parse_port(rest[1:])
    if ":" in text:
        host_text, port_text = text.split(":", 1)
        return parse_host(host_text), parse_port(port_text)
    return parse_host(text), None


@dataclass(slots=True)
class AbsoluteUri:
    """A URI of a scheme other than sip/sips, kept opaque (``tel:+1555``, ``urn:...``)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


@dataclass(slots=True)
class SipUri:
    """A decoded ``sip:``/``sips:`` URI."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)
    scheme: str = "sip"

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(escape(self.user, USER_CHARS))
            if self.password is not None:
                out += [":", escape(self.password, PASSWORD_CHARS)]
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out += [";", escape(name, PARAM_CHARS)]
            if value is not None:
                out += ["=", escape(value, PARAM_CHARS)]
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    f"{escape(k, HEADER_CHARS)}={escape(v, HEADER_CHARS)}" for k, v in self.headers
                )
            )
        return "".join(out)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lowercased (``udp``, ``tcp``, ``tls``...)."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """True for a loose-routing proxy URI (RFC 3261 §16.12)."""
        return "lr" in self.params

    @property
    def hostport(self) -> str:
        """``host[:port]`` with IPv6 brackets, as used in Via sent-by."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def copy(self, **changes: object) -> SipUri:
        """A copy with some fields replaced (params/headers are copied too)."""
        clone = replace(self, params=dict(self.params), headers=list(self.headers))
        return replace(clone, **changes)  # type: ignore[arg-type]

    def equivalent(self, other: Uri) -> bool:
        """URI comparison of RFC 3261 §19.1.4 (not plain string equality)."""
        if not isinstance(other, SipUri) or self.scheme != other.scheme:
            return False
        if self.user != other.user or self.password != other.password:
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in ("transport", "user", "ttl", "method", "maddr"):
            if (name in self.params) != (name in other.params):
                return False
        for name, value in self.params.items():
            if name in other.params:
                theirs = other.params[name]
                if (value or "").lower() != (theirs or "").lower():
                    return False
        mine = sorted((k.lower(), v) for k, v in self.headers)
        theirs_h = sorted((k.lower(), v) for k, v in other.headers)
        return mine == theirs_h


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI; ``sip``/``sips`` fully, other schemes as :class:`AbsoluteUri`.

    Raises :class:`SipParseError` ("Bad URI") on anything malformed, including
    whitespace inside the URI.
    """
    colon = text.find(":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(text[:colon]):
        raise SipParseError("Bad URI")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme not in ("sip", "sips"):
        if not _OPAQUE_RE.fullmatch(rest):
            raise SipParseError("Bad URI")
        return AbsoluteUri(scheme, rest)
    return _parse_sip_uri(scheme, rest)


def parse_sip_uri(text: str) -> SipUri:
    """Like :func:`parse_uri` but insist on a sip/sips URI."""
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise SipParseError("Not a SIP URI")
    return uri


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    # '@' cannot appear unescaped in any part but between userinfo and host,
    # while ';' and '?' may appear unescaped inside the user part itself, so
    # the userinfo must be cut off before looking for params or headers.
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            user_text, password_text = userinfo.split(":", 1)
            password = unescape(password_text, PASSWORD_CHARS)
        else:
            user_text = userinfo
        if not user_text:
            raise SipParseError("Bad URI")
        user = unescape(user_text, USER_CHARS)
    headers: list[tuple[str, str]] = []
    if "?" in rest:
        rest, header_text = rest.split("?", 1)
        for item in header_text.split("&"):
            name, sep, value = item.partition("=")
            if not name or not sep:
                raise SipParseError("Bad URI header")
            headers.append((unescape(name, HEADER_CHARS), unescape(value, HEADER_CHARS)))
    params: dict[str, str | None] = {}
    hostport, *param_items = rest.split(";")
    for item in param_items:
        name, sep, value = item.partition("=")
        if not name or (sep and not value):
            raise SipParseError("Bad URI parameter")
        key = unescape(name, PARAM_CHARS).lower()
        params[key] = unescape(value, PARAM_CHARS) if sep else None
    if not hostport:
        raise SipParseError("Bad URI")
    host, port = split_hostport(hostport)
    return SipUri(
        host=host,
        user=user,
        password=password,
        port=port,
        params=params,
        headers=headers,
        scheme=scheme,
    )
