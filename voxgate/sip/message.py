"""SIP messages: parsing, serialisation and the header value types (RFC 3261 §7, §20, §25).

Sans-IO: nothing here touches a socket or a clock.  The transport hands
bytes in and sends the bytes out::

    try:
        msg = parse(datagram)                      # SipRequest | SipResponse
    except SipParseError as exc:                   # remote's fault
        answer = error_response(exc, source=addr)  # 400 (or 505, 513)
        if answer is not None:                     # None for responses and ACK
            send(answer.serialize())

* **Datagrams** (UDP): :func:`parse` frames the body by ``Content-Length``;
  trailing octets beyond it are ignored (RFC 3261 §18.3), a length larger than
  the datagram is an error, and a missing length means "the rest of the
  datagram" (old RFC 2543 peers).
* **Streams** (TCP/TLS): feed received bytes to a :class:`StreamFramer`; it
  returns whole messages (each then goes to :func:`parse`) and RFC 5626
  keep-alive pings (``StreamFramer.PING``; answer with ``b"\\r\\n"``).  A
  :class:`SipParseError` from the framer means framing is lost: close the
  connection.

Headers are kept as an ordered list of ``(name, value)`` lines in a
:class:`Headers` object.  Names are case-insensitive, compact forms (``v``,
``i``, ``m``...) are expanded to their full names, folded continuation lines
are unfolded, and list-valued headers (Via, Contact, Route, ...) are split on
commas outside quotes and ``<>`` by :meth:`Headers.get_all`.  Typed views of
the important headers are properties on the message (``vias``, ``from_addr``,
``to_addr``, ``call_id``, ``cseq``, ``contacts``, ``routes``...), parsed on
access into :class:`Via`, :class:`NameAddr` and :class:`CSeq`.  :func:`parse`
already validates every one of them, so on a parsed message they do not raise;
on a hand-built message they raise :class:`SipParseError` for bad values.

Strict limits (:class:`SipLimits`) bound message size, header count and
header line length before any other work is done.  Every reason given in a
:class:`SipParseError` is a fixed ASCII phrase, safe as a status-line reason.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Final

from voxgate.sip.errors import SipParseError, SipUsageError
from voxgate.sip.uri import SipUri, Uri, format_host, parse_host, parse_port, parse_uri

__all__ = [
    "BRANCH_MAGIC",
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "CSeq",
    "Headers",
    "NameAddr",
    "SipLimits",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "Via",
    "canonical_name",
    "error_response",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse",
    "parse_name_addr",
    "quote",
    "response_address",
    "split_list",
    "stamp_received",
    "unquote",
]

BRANCH_MAGIC: Final = "z9hG4bK"
"""RFC 3261 branch cookie; a branch starting with it identifies a transaction."""

TOKEN_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
# gen-value = token / host / quoted-string: a host adds IPv6 brackets and colons.
_VALUE_CHARS: Final = TOKEN_CHARS | frozenset("[]:")
_WS: Final = " \t"

COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES: Final = (  # noqa: SIM905 - a word list reads better than 64 literals
    "Accept Accept-Contact Accept-Encoding Accept-Language Alert-Info Allow "
    "Allow-Events Authentication-Info Authorization Call-ID Call-Info Contact "
    "Content-Disposition Content-Encoding Content-Language Content-Length "
    "Content-Type CSeq Date Error-Info Event Expires From Identity In-Reply-To "
    "Max-Forwards Min-Expires Min-SE MIME-Version Organization P-Asserted-Identity "
    "P-Preferred-Identity Path Priority Privacy Proxy-Authenticate "
    "Proxy-Authorization Proxy-Require RAck Reason Record-Route Refer-To Referred-By "
    "Reject-Contact Replaces Reply-To Request-Disposition Require Retry-After Route "
    "RSeq Server Service-Route Session-Expires Subject Subscription-State Supported "
    "Timestamp To Unsupported User-Agent Via Warning WWW-Authenticate"
).split()
_CANONICAL: Final[dict[str, str]] = {name.lower(): name for name in _KNOWN_NAMES}

# Headers whose grammar is a comma-separated list, so that one line with N
# values equals N lines (RFC 3261 §7.3.1).  Authorization-type headers are not
# here: their commas separate parameters, not values.
_LIST_HEADERS: Final = frozenset(
    name.lower()
    for name in (  # noqa: SIM905
        "Accept Accept-Encoding Accept-Language Alert-Info Allow Allow-Events Call-Info "
        "Contact Content-Encoding Content-Language Error-Info In-Reply-To "
        "P-Asserted-Identity P-Preferred-Identity Path Proxy-Require Reason Record-Route "
        "Require Route Service-Route Supported Unsupported Via Warning"
    ).split()
)
# Headers that must appear at most once (§20; RFC 4475 §3.3.8, §3.3.9).
_SINGLE_HEADERS: Final = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")

REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def canonical_name(name: str) -> str:
    """Full, conventionally capitalised header name (``v`` -> ``Via``, ``cseq`` -> ``CSeq``).

    Unknown names are returned as given; comparisons use their lowercase form.
    """
    lower = name.lower()
    full = COMPACT_FORMS.get(lower)
    if full is not None:
        return full
    return _CANONICAL.get(lower, name)


# --------------------------------------------------------------------------- scanning


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WS:
        pos += 1
    return pos


def _scan_quoted(text: str, pos: int) -> int:
    """Return the index just past the quoted-string starting at ``text[pos] == '"'``."""
    n = len(text)
    i = pos + 1
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError("Unterminated quoted string")


def unquote(value: str) -> str:
    """Strip the quotes of a quoted-string and undo its backslash escapes."""
    if len(value) < 2 or not value.startswith('"') or not value.endswith('"'):
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner):
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(inner[i])
            i += 1
    return "".join(out)


def quote(value: str) -> str:
    """Make a quoted-string, escaping backslashes and double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and ``<...>``.

    Elements are stripped; empty elements are kept (as ``""``) so strict
    callers can reject them.
    """
    if "," not in value:
        return [value.strip(_WS)]
    parts: list[str] = []
    start = 0
    i = 0
    n = len(value)
    in_angle = False
    while i < n:
        ch = value[i]
        if ch == '"' and not in_angle:
            i = _scan_quoted(value, i)
            continue
        if ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip(_WS))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(_WS))
    return parts


Params = dict[str, str | None]


def _parse_params(text: str, pos: int, what: str) -> Params:
    """Parse ``*( SEMI generic-param )`` from ``pos`` to the end of ``text``.

    Names are lowercased (they are case-insensitive); values keep their case
    and, when quoted, their quotes, so they print back exactly.
    """
    params: Params = {}
    n = len(text)
    while True:
        pos = _skip_ws(text, pos)
        if pos >= n:
            return params
        if text[pos] != ";":
            raise SipParseError(f"Bad {what}")
        pos = _skip_ws(text, pos + 1)
        start = pos
        while pos < n and text[pos] in TOKEN_CHARS:
            pos += 1
        name = text[start:pos]
        if not name:
            raise SipParseError(f"Bad {what} parameter")
        pos = _skip_ws(text, pos)
        value: str | None = None
        if pos < n and text[pos] == "=":
            pos = _skip_ws(text, pos + 1)
            start = pos
            if pos < n and text[pos] == '"':
                pos = _scan_quoted(text, pos)
            else:
                while pos < n and text[pos] in _VALUE_CHARS:
                    pos += 1
            value = text[start:pos]
            if not value:
                raise SipParseError(f"Bad {what} parameter")
        params[name.lower()] = value


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# --------------------------------------------------------------------------- header value types


@dataclass(slots=True)
class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...).

    ``display_name`` is unquoted text (``None`` when absent).  ``params`` are the
    header parameters after the URI (``tag``, ``expires``, ``q``...), not the
    URI's own parameters.
    """

    uri: Uri
    display_name: str | None = None
    params: Params = field(default_factory=dict)

    def __str__(self) -> str:
        # Always the <> form: it is valid for every URI, including ones with
        # ';', ',' or '?' that would be ambiguous as a bare addr-spec.
        prefix = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{prefix}<{self.uri}>{_format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (dialog identifier half), if any."""
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        """A copy carrying ``tag``."""
        params = dict(self.params)
        params["tag"] = tag
        return replace(self, params=params)

    @property
    def sip_uri(self) -> SipUri:
        """The URI as a :class:`SipUri`; :class:`SipParseError` for other schemes."""
        if not isinstance(self.uri, SipUri):
            raise SipParseError("Not a SIP URI")
        return self.uri

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse one name-addr / addr-spec value (see :func:`parse_name_addr`)."""
        return parse_name_addr(text)


def parse_name_addr(text: str) -> NameAddr:
    """Parse ``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)``.

    Without ``<>`` the URI ends at the first ``;`` or whitespace, so what
    follows belongs to the header (RFC 3261 §20.10); a bare URI containing
    ``?`` or ``,`` must be enclosed and is rejected.  Whitespace just inside
    ``<`` and ``>`` is tolerated (RFC 4475 §3.1.2.14 allows ignoring it).
    """
    text = text.strip(_WS)
    n = len(text)
    display: str | None = None
    if text.startswith('"'):
        end = _scan_quoted(text, 0)
        display = unquote(text[:end])
        pos = _skip_ws(text, end)
        if pos >= n or text[pos] != "<":
            raise SipParseError("Bad address")
    else:
        lt = text.find("<")
        if lt < 0:
            end = 0
            while end < n and text[end] not in ";" + _WS:
                end += 1
            uri_text = text[:end]
            if not uri_text or "?" in uri_text or "," in uri_text:
                raise SipParseError("Bad address")
            return NameAddr(parse_uri(uri_text), None, _parse_params(text, end, "address"))
        words = text[:lt].split()
        for word in words:
            if any(ch not in TOKEN_CHARS for ch in word):
                raise SipParseError("Bad display name")
        display = " ".join(words) if words else None
        pos = lt
    gt = text.find(">", pos)
    if gt < 0:
        raise SipParseError("Bad address")
    uri = parse_uri(text[pos + 1 : gt].strip(_WS))
    return NameAddr(uri, display, _parse_params(text, gt + 1, "address"))


_TOKEN_RE: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
_VIA_RE: Final = re.compile(
    rf"({_TOKEN_RE})[ \t]*/[ \t]*({_TOKEN_RE})[ \t]*/[ \t]*({_TOKEN_RE})[ \t]+"
    r"(\[[^\]]*\]|[^ \t;:\[]+)(?:[ \t]*:[ \t]*([0-9]+))?"
)
_CSEQ_RE: Final = re.compile(rf"[ \t]*([0-9]{{1,10}})[ \t]+({_TOKEN_RE})[ \t]*")


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/<transport> <host>[:<port>];params``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_format_params(self.params)}"

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as written in the Via (IPv6 bracketed)."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def branch(self) -> str | None:
        """The branch parameter (transaction id when it starts with ``z9hG4bK``)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter: source IP the next hop saw (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """True if the ``rport`` parameter is present (with or without value, RFC 3581)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The filled-in ``rport`` port, or None if absent or still empty."""
        value = self.params.get("rport")
        return parse_port(value) if value else None

    def with_params(self, **params: str | None) -> Via:
        """A copy with parameters set (``None`` = valueless flag such as ``rport``)."""
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via value, tolerating LWS around ``/``, ``:``, ``;`` and ``=``."""
        text = text.strip(_WS)
        m = _VIA_RE.match(text)
        if m is None:
            raise SipParseError("Bad Via")
        name, version, transport, host_text, port_text = m.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError("Bad Via")
        host = parse_host(host_text)
        port = parse_port(port_text) if port_text is not None else None
        params = _parse_params(text, m.end(), "Via")
        if "rport" in params and params["rport"] is not None:
            parse_port(params["rport"] or "")
        if "branch" in params and not params["branch"]:
            raise SipParseError("Bad Via")
        return cls(transport.upper(), host, port, params)


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number (0 .. 2**31-1) and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``<number> <method>``; numbers of 2**31 or more are an error."""
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise SipParseError("Bad CSeq")
        number = int(m.group(1))
        if number >= 2**31:
            raise SipParseError("Bad CSeq")
        return cls(number, m.group(2))


def _parse_small_int(value: str, reason: str, max_digits: int = 10) -> int:
    value = value.strip(_WS)
    if not value or len(value) > max_digits or not value.isascii() or not value.isdigit():
        raise SipParseError(reason)
    return int(value)


# --------------------------------------------------------------------------- headers


class Headers:
    """Ordered, case-insensitive multi-map of header lines.

    Each entry is one header line ``(name, value)``; names are stored in their
    canonical full form (compact forms expanded).  ``get_all`` additionally
    splits comma-separated list headers into their individual values.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def _entry(name: str, value: str) -> tuple[str, str, str]:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise SipUsageError(f"header {name!r} would break the message framing")
        full = canonical_name(name)
        return (full.lower(), full, value)

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self._items.append(self._entry(name, value))

    def insert(self, index: int, name: str, value: str) -> None:
        """Insert a header line at a position (0 = first)."""
        self._items.insert(index, self._entry(name, value))

    def get(self, name: str) -> str | None:
        """The value of the first line named ``name``, or None."""
        key = canonical_name(name).lower()
        for k, _, value in self._items:
            if k == key:
                return value
        return None

    def get_lines(self, name: str) -> list[str]:
        """Values of every line named ``name``, unsplit, in order."""
        key = canonical_name(name).lower()
        return [value for k, _, value in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``: list headers split on commas, empty elements dropped."""
        key = canonical_name(name).lower()
        lines = [value for k, _, value in self._items if k == key]
        if key not in _LIST_HEADERS:
            return lines
        return [part for line in lines for part in split_list(line) if part]

    def count(self, name: str) -> int:
        """Number of lines named ``name``."""
        key = canonical_name(name).lower()
        return sum(1 for k, _, _ in self._items if k == key)

    def set(self, name: str, value: str) -> None:
        """Replace every line named ``name`` by one line, at the first one's position."""
        self.set_all(name, [value])

    def set_all(self, name: str, values: list[str]) -> None:
        """Replace every line named ``name`` by one line per value, keeping position."""
        key = canonical_name(name).lower()
        index = next((i for i, (k, _, _) in enumerate(self._items) if k == key), None)
        self.remove(name)
        if index is None:
            index = len(self._items)
        for offset, value in enumerate(values):
            self._items.insert(index + offset, self._entry(name, value))

    def remove(self, name: str) -> None:
        """Delete every line named ``name``."""
        key = canonical_name(name).lower()
        self._items = [item for item in self._items if item[0] != key]

    def copy(self) -> Headers:
        """An independent copy."""
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


# --------------------------------------------------------------------------- messages


class SipMessage:
    """Common part of requests and responses: headers, body and typed header views."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def start_line(self) -> str:
        """The request or status line, without CRLF."""
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is always (re)computed from the body."""
        lines = [self.start_line()]
        lines.extend(f"{name}: {value}" for name, value in self.headers if name != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()

    # typed views ---------------------------------------------------------

    def _single(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"Missing {name}")
        return value

    @property
    def vias(self) -> list[Via]:
        """All Via values, topmost first."""
        values = self._strict_list("Via")
        return [Via.parse(v) for v in values]

    @property
    def top_via(self) -> Via:
        """The topmost Via value."""
        values = self._strict_list("Via")
        if not values:
            raise SipParseError("Missing Via")
        return Via.parse(values[0])

    @property
    def from_addr(self) -> NameAddr:
        """The From header."""
        return parse_name_addr(self._single("From"))

    @property
    def to_addr(self) -> NameAddr:
        """The To header."""
        return parse_name_addr(self._single("To"))

    @property
    def call_id(self) -> str:
        """The Call-ID header."""
        value = self._single("Call-ID").strip(_WS)
        if not value or any(ch in _WS for ch in value):
            raise SipParseError("Bad Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        """The CSeq header."""
        return CSeq.parse(self._single("CSeq"))

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards, or None when absent (old RFC 2543 peers omit it)."""
        value = self.headers.get("Max-Forwards")
        return None if value is None else _parse_small_int(value, "Bad Max-Forwards")

    @property
    def content_type(self) -> str | None:
        """Media type of the body, lowercased, without parameters (``application/sdp``)."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip(_WS).lower() or None

    @property
    def expires(self) -> int | None:
        """Expires header in seconds, clamped to 2**32-1 (huge values never overflow)."""
        value = self.headers.get("Expires")
        if value is None:
            return None
        value = value.strip(_WS)
        if not value.isascii() or not value.isdigit():
            raise SipParseError("Bad Expires")
        return 2**32 - 1 if len(value) > 10 else min(int(value), 2**32 - 1)

    @property
    def contact_is_wildcard(self) -> bool:
        """True for ``Contact: *`` (REGISTER removing all bindings)."""
        values = self.headers.get_all("Contact")
        return len(values) == 1 and values[0] == "*"

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values (empty for ``Contact: *``)."""
        if self.contact_is_wildcard:
            return []
        return [parse_name_addr(v) for v in self._strict_list("Contact")]

    @property
    def routes(self) -> list[NameAddr]:
        """Route values, first hop first."""
        return [parse_name_addr(v) for v in self._strict_list("Route")]

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values, in message order."""
        return [parse_name_addr(v) for v in self._strict_list("Record-Route")]

    def header_tokens(self, name: str) -> list[str]:
        """Comma-separated tokens of an option-tag header (Require, Supported, Allow...)."""
        return [v.strip(_WS) for v in self.headers.get_all(name) if v.strip(_WS)]

    def _strict_list(self, name: str) -> list[str]:
        # Empty list elements (",,") are a syntax error for these headers
        # (RFC 4475 §3.1.2.1); for free-form list headers they are skipped.
        values = [part for line in self.headers.get_lines(name) for part in split_list(line)]
        if any(not part for part in values):
            raise SipParseError(f"Bad {name}")
        return values


class SipRequest(SipMessage):
    """A SIP request.  ``uri`` is the parsed Request-URI."""

    __slots__ = ("method", "uri")

    def __init__(
        self, method: str, uri: Uri, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"SipRequest({self.method} {self.uri})"


class SipResponse(SipMessage):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str = "", headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        if not 100 <= status <= 699:
            raise SipUsageError(f"status {status} out of range")
        if "\r" in reason or "\n" in reason:
            raise SipUsageError("reason phrase contains a line break")
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"SipResponse({self.status} {self.reason})"


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class SipLimits:
    """Hard bounds checked before anything else is parsed."""

    max_message_bytes: int = 65535
    max_headers: int = 256
    max_header_line: int = 8192


DEFAULT_LIMITS: Final = SipLimits()

_VERSION_RE: Final = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_METHOD_RE: Final = re.compile(_TOKEN_RE)
_HEADER_NAME_RE: Final = re.compile(_TOKEN_RE)


def _find_head_end(data: bytes | bytearray) -> tuple[int, int]:
    """Index of the blank line ending the headers and its length, or (-1, 0)."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return (crlf, 4) if crlf >= 0 else (-1, 0)


def parse(data: bytes, limits: SipLimits = DEFAULT_LIMITS) -> SipRequest | SipResponse:
    """Parse one message from a datagram (or from one :class:`StreamFramer` frame).

    Raises :class:`SipParseError`; when the start line and header lines were
    readable, ``exc.message`` holds the partially validated message.
    """
    if len(data) > limits.max_message_bytes:
        raise SipParseError("Message Too Large", status=513)
    # RFC 3261 §7.5: CRLFs before the start line are keep-alive noise.
    start = 0
    while start < len(data) and data[start] in b"\r\n":
        start += 1
    end, sep = _find_head_end(data[start:])
    if end < 0:
        # A datagram ending right after its last header line has merely lost
        # the empty line; anything else is truncated.
        if not data.endswith(b"\n"):
            raise SipParseError("Incomplete Headers")
        end, sep = len(data.rstrip(b"\r\n")) - start, 0
    head = data[start : start + end].decode("utf-8", "surrogateescape")
    rest = data[start + end + sep :]
    lines = head.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if len(lines) - 1 > limits.max_headers:
        raise SipParseError("Too Many Headers")
    headers = Headers()
    _parse_header_lines(lines[1:], headers, limits)
    try:
        msg = _parse_start_line(lines[0])
    except SipParseError as exc:
        if lines[0][:4].upper() != "SIP/":
            exc.headers = headers
            exc.method = lines[0].split(" ", 1)[0]
        raise
    msg.headers = headers
    try:
        msg.body = _frame_body(msg.headers, rest)
        _validate(msg)
    except SipParseError as exc:
        exc.message = msg
        raise
    return msg


def _parse_start_line(line: str) -> SipRequest | SipResponse:
    if "\r" in line:
        raise SipParseError("Bad Start Line")
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        if not _VERSION_RE.fullmatch(version):
            raise SipParseError("Bad Status-Line")
        if version.upper() != "SIP/2.0":
            raise SipParseError("Version Not Supported", status=505)
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] not in "123456":
            raise SipParseError("Bad Status Code")
        return SipResponse(int(code), reason)
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("Bad Request-Line")
    method, uri_text, version = parts
    if not _METHOD_RE.fullmatch(method) or not _VERSION_RE.fullmatch(version):
        raise SipParseError("Bad Request-Line")
    if version.upper() != "SIP/2.0":
        raise SipParseError("Version Not Supported", status=505)
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        # Headers in a Request-URI must never become real headers (RFC 4475 §3.1.2.11).
        raise SipParseError("Bad Request-URI")
    return SipRequest(method, uri)


def _parse_header_lines(lines: list[str], headers: Headers, limits: SipLimits) -> None:
    pending: list[tuple[str, str]] = []
    for line in lines:
        if "\r" in line:
            raise SipParseError("Bad Header Line")
        if line[:1] in (" ", "\t"):
            if not pending:
                raise SipParseError("Bad Header Line")
            name, value = pending[-1]
            value = f"{value} {line.strip(_WS)}" if value else line.strip(_WS)
            pending[-1] = (name, value)
        else:
            name, colon, value = line.partition(":")
            name = name.rstrip(_WS)
            if not colon or not _HEADER_NAME_RE.fullmatch(name):
                raise SipParseError("Bad Header Line")
            pending.append((name, value.strip(_WS)))
        if len(pending[-1][1]) + len(pending[-1][0]) > limits.max_header_line:
            raise SipParseError("Header Too Long")
    for name, value in pending:
        headers.add(name, value.rstrip(_WS))


def _frame_body(headers: Headers, rest: bytes) -> bytes:
    lengths = headers.get_lines("Content-Length")
    if not lengths:
        return rest
    if len(lengths) > 1:
        raise SipParseError("Multiple Content-Length")
    length = _parse_small_int(lengths[0], "Bad Content-Length")
    if length > len(rest):
        raise SipParseError("Content-Length Exceeds Message")
    return rest[:length]


def _validate(msg: SipRequest | SipResponse) -> None:
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in msg.headers:
            raise SipParseError(f"Missing {name}")
    for name in _SINGLE_HEADERS:
        if msg.headers.count(name) > 1:
            raise SipParseError(f"Multiple {name}")
    if not msg.vias:
        raise SipParseError("Missing Via")
    msg.from_addr  # noqa: B018 - parsed only to validate
    msg.to_addr  # noqa: B018
    msg.call_id  # noqa: B018
    cseq = msg.cseq
    msg.max_forwards  # noqa: B018
    msg.contacts  # noqa: B018
    msg.routes  # noqa: B018
    msg.record_routes  # noqa: B018
    if isinstance(msg, SipRequest) and cseq.method != msg.method:
        raise SipParseError("CSeq Method Mismatch")


# --------------------------------------------------------------------------- stream framing


class StreamFramer:
    """Split a reliable byte stream (TCP/TLS) into whole SIP messages.

    ``feed(data)`` returns complete frames, in order: message bytes to pass to
    :func:`parse`, or :attr:`PING` for an RFC 5626 double-CRLF keep-alive
    (answer it with ``b"\\r\\n"``).  A missing Content-Length counts as 0.
    After a :class:`SipParseError` the stream cannot be resynchronised: close
    the connection.
    """

    PING: Final = b"\r\n\r\n"

    def __init__(self, limits: SipLimits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame they complete."""
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        while buf:
            if buf.startswith(b"\r\n\r\n"):
                frames.append(self.PING)
                del buf[:4]
                continue
            if buf[0] in b"\r\n":
                if len(buf) < 4 and self.PING.startswith(bytes(buf)):
                    break  # maybe the start of a ping; wait for more
                del buf[:1]  # a lone CRLF (keep-alive pong) between messages
                continue
            end, sep = _find_head_end(buf)
            if end < 0:
                if len(buf) > self._limits.max_message_bytes:
                    raise SipParseError("Message Too Large", status=513)
                break
            total = end + sep + _stream_content_length(bytes(buf[:end]))
            if total > self._limits.max_message_bytes:
                raise SipParseError("Message Too Large", status=513)
            if len(buf) < total:
                break
            frames.append(bytes(buf[:total]))
            del buf[:total]
        return frames


def _stream_content_length(head: bytes) -> int:
    found: list[str] = []
    for raw in head.split(b"\n"):
        if raw[:1] in (b" ", b"\t"):
            continue
        name, colon, value = raw.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            found.append(value.decode("latin-1").strip())
    if not found:
        return 0
    if len(set(found)) > 1:
        raise SipParseError("Multiple Content-Length")
    return _parse_small_int(found[0], "Bad Content-Length")


# --------------------------------------------------------------------------- building


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 96 random bits)."""
    return BRANCH_MAGIC + secrets.token_hex(12)


def new_tag() -> str:
    """A fresh From/To tag (64 random bits)."""
    return secrets.token_hex(8)


def new_call_id() -> str:
    """A fresh globally unique Call-ID that reveals nothing about the host."""
    return secrets.token_hex(16)


def stamp_received(request: SipRequest, source: tuple[str, int]) -> None:
    """Add ``received``/``rport`` to the top Via of a request just received.

    RFC 3261 §18.2.1 adds ``received`` when the sent-by host differs from the
    packet's source; RFC 3581 fills in an empty ``rport`` with the source port
    and then always adds ``received``.  Malformed Via values are left alone.
    """
    values = [part for line in request.headers.get_lines("Via") for part in split_list(line)]
    if not values:
        return
    try:
        top = Via.parse(values[0])
    except SipParseError:
        return
    ip, port = source
    if top.has_rport:
        top = top.with_params(received=ip, rport=str(port))
    elif top.host != ip:
        top = top.with_params(received=ip)
    else:
        return
    values[0] = str(top)
    request.headers.set_all("Via", values)


def response_address(via: Via, source: tuple[str, int] | None = None) -> tuple[str, int]:
    """Where to send a response for a request whose top Via is ``via`` (§18.2.2, RFC 3581).

    ``source`` is the address the request came from; it wins when the Via
    asked for ``rport``.  Reliable transports should instead reuse the
    connection the request arrived on.
    """
    host = via.received or via.host
    if via.has_rport:
        if via.rport is not None:
            return host, via.rport
        if source is not None:
            return source
    default_port = 5061 if via.transport == "TLS" else 5060
    return host, via.port if via.port is not None else default_port


def error_response(exc: SipParseError, source: tuple[str, int] | None = None) -> SipResponse | None:
    """The stateless error answer to a malformed *request*, or None if none is due.

    None for malformed responses (they are dropped), for ACKs (never answered)
    and when there is no Via to route the answer by.
    """
    if isinstance(exc.message, SipRequest):
        request: SipRequest = exc.message
    elif exc.headers is not None and exc.method is not None:
        request = SipRequest(exc.method, SipUri(host="invalid"), exc.headers)
    else:
        return None
    if request.method == "ACK" or "Via" not in request.headers:
        return None
    try:
        return make_response(request, exc.status, exc.reason, source=source)
    except SipParseError:
        return None  # the headers an answer copies (Via, From, To...) are unusable too


def make_response(
    request: SipMessage,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    source: tuple[str, int] | None = None,
) -> SipResponse:
    """Build a response per RFC 3261 §8.2.6: copy Via, From, To, Call-ID, CSeq.

    ``to_tag`` is added to To unless it already has one (never on 100).
    ``source`` (``(ip, port)`` the request came from) stamps ``received`` and
    ``rport`` into the top Via as RFC 3581 asks.  Works on the best-effort
    ``SipParseError.message`` too: unparseable values are copied verbatim.
    """
    if isinstance(request, SipRequest) and request.method == "ACK":
        raise SipUsageError("ACK is never answered")
    if source is not None and isinstance(request, SipRequest):
        stamp_received(request, source)
    headers = Headers()
    for via_line in request.headers.get_lines("Via"):
        headers.add("Via", via_line)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag is not None and status > 100:
            try:
                to = parse_name_addr(value)
            except SipParseError:
                pass
            else:
                if to.tag is None:
                    value = str(to.with_tag(to_tag))
        headers.add(name, value)
    if status == 100:
        timestamp = request.headers.get("Timestamp")
        if timestamp is not None:
            headers.add("Timestamp", timestamp)
    phrase = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")
    return SipResponse(status, phrase, headers)
