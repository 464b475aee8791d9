"""SDP session descriptions (RFC 4566) and the offer/answer model (RFC 3264)
for one audio stream with G.711 and RFC 4733 telephone-events.

Parsing is strict about structure (line syntax, numeric fields, address
types) so a malformed body becomes an :class:`SdpError` (the caller answers
400/488), and lenient about line order and unknown lines, which real peers
get wrong often enough that rejecting them would break calls.
"""

from __future__ import annotations

import enum
import random
import re

import msgspec

__all__ = [
    "DEFAULT_CODECS",
    "PCMA",
    "PCMU",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "MediaParams",
    "NoCommonCodec",
    "Origin",
    "RtpMap",
    "SdpError",
    "SdpSession",
    "SessionDescription",
    "parse_sdp",
]

MAX_SDP_BYTES = 64 * 1024
MAX_SDP_LINES = 1024
# RFC 4733: absent fmtp means events 0-15 (the DTMF digits) are supported.
DEFAULT_DTMF_EVENTS = frozenset(range(16))

_LINE = re.compile(r"^([a-z])=(.*)$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_PROTO = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*$")
_ADDRESS = re.compile(r"^[0-9A-Za-z.:\-_%\[\]]+(/\d+){0,2}$")


class SdpError(ValueError):
    """A session description is malformed or does not fit the offer/answer
    exchange (the remote's fault; answer 400 or 488)."""


class NoCommonCodec(SdpError):
    """The offer (or answer) has no audio stream we can use: the caller
    answers 488 Not Acceptable Here."""


class Direction(enum.Enum):
    """Media stream direction attribute (RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        if receives:
            return cls.RECVONLY
        return cls.INACTIVE


_DIRECTIONS = {d.value: d for d in Direction}


# --- data model -----------------------------------------------------------


class Origin(msgspec.Struct, kw_only=True):
    username: str = "-"
    session_id: int
    session_version: int
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str


class Connection(msgspec.Struct, kw_only=True):
    net_type: str = "IN"
    addr_type: str = "IP4"
    # May carry "/ttl[/count]" for multicast; we keep it verbatim.
    address: str

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """``c=IN IP4 0.0.0.0``: the RFC 2543 way of putting a call on hold."""
        return self.host in ("0.0.0.0", "::")


class Attribute(msgspec.Struct, array_like=True):
    name: str
    value: str | None = None


class RtpMap(msgspec.Struct, frozen=True, kw_only=True):
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1


# RFC 3551 table 4 entries we care about, for offers that omit a=rtpmap.
_STATIC_RTPMAPS = {
    0: RtpMap(payload_type=0, encoding="PCMU", clock_rate=8000),
    3: RtpMap(payload_type=3, encoding="GSM", clock_rate=8000),
    4: RtpMap(payload_type=4, encoding="G723", clock_rate=8000),
    8: RtpMap(payload_type=8, encoding="PCMA", clock_rate=8000),
    9: RtpMap(payload_type=9, encoding="G722", clock_rate=8000),
    13: RtpMap(payload_type=13, encoding="CN", clock_rate=8000),
    18: RtpMap(payload_type=18, encoding="G729", clock_rate=8000),
}


class MediaDescription(msgspec.Struct, kw_only=True):
    media: str
    port: int
    port_count: int | None = None
    proto: str
    formats: list[str]
    title: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = msgspec.field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = msgspec.field(default_factory=list)

    def attribute_values(self, name: str) -> list[str | None]:
        return [a.value for a in self.attributes if a.name == name]

    def attribute(self, name: str) -> str | None:
        for a in self.attributes:
            if a.name == name:
                return a.value
        return None

    def has_attribute(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    @property
    def payload_types(self) -> list[int]:
        """Formats as RTP payload types (for RTP/AVP-style protocols)."""
        out: list[int] = []
        for f in self.formats:
            if not f.isdigit() or int(f) > 127:
                raise SdpError(f"bad RTP payload type {f!r}")
            out.append(int(f))
        return out

    def rtpmaps(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` entries by payload type, with RFC 3551 static
        defaults for listed static types that have none."""
        maps: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            rm = _parse_rtpmap(value)
            maps.setdefault(rm.payload_type, rm)
        for pt in self.payload_types:
            if pt not in maps and pt in _STATIC_RTPMAPS:
                maps[pt] = _STATIC_RTPMAPS[pt]
        return maps

    def fmtp(self, payload_type: int) -> str | None:
        prefix = f"{payload_type} "
        for value in self.attribute_values("fmtp"):
            if value is not None and value.startswith(prefix):
                return value[len(prefix) :].strip()
        return None

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            ptime = int(float(value.strip()))
        except ValueError as exc:
            raise SdpError(f"bad ptime {value!r}") from exc
        if not 1 <= ptime <= 1000:
            raise SdpError(f"ptime {ptime} out of range")
        return ptime

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, if any."""
        for a in self.attributes:
            if a.name in _DIRECTIONS:
                return _DIRECTIONS[a.name]
        return None

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """``a=rtcp:port [IN IP4 addr]`` (RFC 3605)."""
        value = self.attribute("rtcp")
        if value is None:
            return None
        parts = value.split()
        if not parts or not parts[0].isdigit() or int(parts[0]) > 65535:
            raise SdpError(f"bad rtcp attribute {value!r}")
        address = parts[3] if len(parts) == 4 else None
        if len(parts) not in (1, 4):
            raise SdpError(f"bad rtcp attribute {value!r}")
        return int(parts[0]), address


class SessionDescription(msgspec.Struct, kw_only=True):
    version: int = 0
    origin: Origin
    name: str = "-"
    info: str | None = None
    uri: str | None = None
    emails: list[str] = msgspec.field(default_factory=list)
    phones: list[str] = msgspec.field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = msgspec.field(default_factory=list)
    # (t= value, [r= values]) pairs.
    times: list[tuple[str, list[str]]] = msgspec.field(default_factory=lambda: [("0 0", [])])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = msgspec.field(default_factory=list)
    media: list[MediaDescription] = msgspec.field(default_factory=list)

    def media_connection(self, m: MediaDescription) -> Connection | None:
        return m.connection if m.connection is not None else self.connection

    def media_direction(self, m: MediaDescription) -> Direction:
        """Media-level direction, else session-level, else sendrecv (RFC 3264 §5.1)."""
        d = m.direction
        if d is not None:
            return d
        for a in self.attributes:
            if a.name in _DIRECTIONS:
                return _DIRECTIONS[a.name]
        return Direction.SENDRECV

    def serialize(self) -> str:
        """Wire form with CRLF line ends, in RFC 4566 §5 order."""
        lines = [f"v={self.version}", f"o={_origin_str(self.origin)}", f"s={self.name or '-'}"]
        if self.info is not None:
            lines.append(f"i={self.info}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines += [f"e={e}" for e in self.emails]
        lines += [f"p={p}" for p in self.phones]
        if self.connection is not None:
            lines.append(f"c={_connection_str(self.connection)}")
        lines += [f"b={b}" for b in self.bandwidths]
        for t, repeats in self.times or [("0 0", [])]:
            lines.append(f"t={t}")
            lines += [f"r={r}" for r in repeats]
        if self.zone is not None:
            lines.append(f"z={self.zone}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines += [_attribute_str(a) for a in self.attributes]
        for m in self.media:
            port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
            lines.append(f"m={m.media} {port} {m.proto} {' '.join(m.formats)}")
            if m.title is not None:
                lines.append(f"i={m.title}")
            if m.connection is not None:
                lines.append(f"c={_connection_str(m.connection)}")
            lines += [f"b={b}" for b in m.bandwidths]
            if m.key is not None:
                lines.append(f"k={m.key}")
            lines += [_attribute_str(a) for a in m.attributes]
        return "\r\n".join(lines) + "\r\n"

    def to_bytes(self) -> bytes:
        return self.serialize().encode("utf-8")


def _origin_str(o: Origin) -> str:
    return f"{o.username} {o.session_id} {o.session_version} {o.net_type} {o.addr_type} {o.address}"


def _connection_str(c: Connection) -> str:
    return f"{c.net_type} {c.addr_type} {c.address}"


def _attribute_str(a: Attribute) -> str:
    return f"a={a.name}" if a.value is None else f"a={a.name}:{a.value}"


# --- parsing --------------------------------------------------------------


def _parse_rtpmap(value: str | None) -> RtpMap:
    # "<pt> <encoding>/<clock rate>[/<channels>]"
    if value is None:
        raise SdpError("rtpmap without a value")
    parts = value.strip().split(None, 1)
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > 127:
        raise SdpError(f"bad rtpmap {value!r}")
    enc = parts[1].strip().split("/")
    if len(enc) not in (2, 3) or not enc[0] or not enc[1].isdigit():
        raise SdpError(f"bad rtpmap {value!r}")
    if len(enc) == 3 and not enc[2].isdigit():
        raise SdpError(f"bad rtpmap channels {value!r}")
    clock = int(enc[1])
    channels = int(enc[2]) if len(enc) == 3 else 1
    if clock <= 0 or channels <= 0:
        raise SdpError(f"bad rtpmap {value!r}")
    return RtpMap(payload_type=int(parts[0]), encoding=enc[0], clock_rate=clock, channels=channels)


def _parse_int(text: str, what: str, maximum: int | None = None) -> int:
    if not text.isdigit() or not text.isascii():
        raise SdpError(f"bad {what} {text!r}")
    n = int(text)
    if maximum is not None and n > maximum:
        raise SdpError(f"{what} {n} out of range")
    return n


def _parse_origin(value: str) -> Origin:
    parts = value.split(" ")
    if len(parts) != 6:
        raise SdpError(f"bad o= line {value!r}")
    user, sid, sver, net, addr_type, address = parts
    if net != "IN" or addr_type not in ("IP4", "IP6") or not _ADDRESS.match(address) or not user:
        raise SdpError(f"bad o= line {value!r}")
    return Origin(
        username=user,
        session_id=_parse_int(sid, "session id"),
        session_version=_parse_int(sver, "session version"),
        net_type=net,
        addr_type=addr_type,
        address=address,
    )


def _parse_connection(value: str) -> Connection:
    parts = value.split(" ")
    if len(parts) != 3:
        raise SdpError(f"bad c= line {value!r}")
    net, addr_type, address = parts
    if net != "IN" or addr_type not in ("IP4", "IP6") or not _ADDRESS.match(address):
        raise SdpError(f"bad c= line {value!r}")
    return Connection(net_type=net, addr_type=addr_type, address=address)


def _parse_media(value: str) -> MediaDescription:
    parts = value.split(" ")
    if len(parts) < 4 or not _TOKEN.match(parts[0]) or not _PROTO.match(parts[2]):
        raise SdpError(f"bad m= line {value!r}")
    port_text, _, count_text = parts[1].partition("/")
    port = _parse_int(port_text, "media port", 65535)
    count = _parse_int(count_text, "port count", 65535) if count_text else None
    formats = parts[3:]
    if any(not f or not _TOKEN.match(f) for f in formats):
        raise SdpError(f"bad m= formats {value!r}")
    m = MediaDescription(
        media=parts[0], port=port, port_count=count, proto=parts[2], formats=formats
    )
    if "RTP/" in m.proto:
        m.payload_types  # noqa: B018  # validates the formats as payload types
    return m


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    if not name or not _TOKEN.match(name):
        raise SdpError(f"bad attribute {value!r}")
    return Attribute(name, rest if sep else None)


def _first(fields: dict[str, list[str]], kind: str) -> str | None:
    values = fields.get(kind)
    return values[0] if values else None


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpError` when it is malformed."""
    if isinstance(data, bytes):
        if len(data) > MAX_SDP_BYTES:
            raise SdpError("SDP body too large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError("SDP body is not UTF-8") from exc
    else:
        text = data
        if len(text) > MAX_SDP_BYTES:
            raise SdpError("SDP body too large")
    raw_lines = text.replace("\r\n", "\n").split("\n")
    while raw_lines and raw_lines[-1] == "":
        raw_lines.pop()
    if len(raw_lines) > MAX_SDP_LINES:
        raise SdpError("SDP body has too many lines")
    if not raw_lines:
        raise SdpError("empty SDP body")

    version: int | None = None
    origin: Origin | None = None
    name: str | None = None
    sess_fields: dict[str, list[str]] = {}
    times: list[tuple[str, list[str]]] = []
    sess_attrs: list[Attribute] = []
    media: list[MediaDescription] = []
    current: MediaDescription | None = None

    for i, line in enumerate(raw_lines):
        match = _LINE.match(line)
        if match is None or "\r" in line or "\x00" in line:
            raise SdpError(f"bad SDP line {i + 1}: {line[:60]!r}")
        kind, value = match.group(1), match.group(2)
        if i == 0:
            if kind != "v":
                raise SdpError("SDP must start with v=")
            if value != "0":
                raise SdpError(f"unsupported SDP version {value!r}")
            version = 0
            continue
        if kind == "v":
            raise SdpError("repeated v= line")
        if kind == "m":
            current = _parse_media(value)
            media.append(current)
        elif current is not None:
            if kind == "a":
                current.attributes.append(_parse_attribute(value))
            elif kind == "c":
                if current.connection is not None:
                    # Several c= lines are for multicast layering; not supported.
                    raise SdpError("multiple c= lines in one media section")
                current.connection = _parse_connection(value)
            elif kind == "b":
                current.bandwidths.append(value)
            elif kind == "i":
                current.title = value
            elif kind == "k":
                current.key = value
            # Other letters inside a media section are ignored.
        elif kind == "o":
            if origin is not None:
                raise SdpError("repeated o= line")
            origin = _parse_origin(value)
        elif kind == "s":
            if name is not None:
                raise SdpError("repeated s= line")
            name = value
        elif kind == "t":
            times.append((value, []))
        elif kind == "r":
            if not times:
                raise SdpError("r= before t=")
            times[-1][1].append(value)
        elif kind == "a":
            sess_attrs.append(_parse_attribute(value))
        else:
            sess_fields.setdefault(kind, []).append(value)

    if origin is None:
        raise SdpError("SDP has no o= line")
    if name is None:
        raise SdpError("SDP has no s= line")
    for t, _ in times:
        start, _, stop = t.partition(" ")
        if not start.isdigit() or not stop.isdigit():
            raise SdpError(f"bad t= line {t!r}")
    connections = sess_fields.get("c", [])
    if len(connections) > 1:
        raise SdpError("repeated session-level c= line")
    return SessionDescription(
        version=version or 0,
        origin=origin,
        name=name,
        info=_first(sess_fields, "i"),
        uri=_first(sess_fields, "u"),
        emails=sess_fields.get("e", []),
        phones=sess_fields.get("p", []),
        connection=_parse_connection(connections[0]) if connections else None,
        bandwidths=sess_fields.get("b", []),
        times=times or [("0 0", [])],
        zone=_first(sess_fields, "z"),
        key=_first(sess_fields, "k"),
        attributes=sess_attrs,
        media=media,
    )


# --- offer / answer -------------------------------------------------------


class Codec(msgspec.Struct, frozen=True):
    """An audio codec we can send and receive, with its payload type."""

    name: str
    payload_type: int
    clock_rate: int = 8000

    def matches(self, rtpmap: RtpMap) -> bool:
        return (
            rtpmap.encoding.lower() == self.name.lower()
            and rtpmap.clock_rate == self.clock_rate
            and rtpmap.channels == 1
        )


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
DEFAULT_CODECS: tuple[Codec, ...] = (PCMU, PCMA)
TELEPHONE_EVENT = "telephone-event"


class MediaParams(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of an offer/answer exchange for our audio stream."""

    codec: Codec  # payload type as used on the wire in this call
    telephone_event_pt: int | None
    # Our direction: whether we may send / should expect to receive.
    direction: Direction
    remote_rtp: tuple[str, int] | None  # None when on hold (0.0.0.0) or rejected
    remote_rtcp: tuple[str, int] | None
    remote_ptime: int | None = None
    local_port: int = 0

    @property
    def on_hold(self) -> bool:
        return not self.direction.sends


def _parse_event_list(fmtp: str | None) -> frozenset[int]:
    """RFC 4733 event list such as ``0-15,16`` (absent: 0-15)."""
    if fmtp is None or not fmtp.strip():
        return DEFAULT_DTMF_EVENTS
    events: set[int] = set()
    for part in fmtp.replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise SdpError(f"bad telephone-event fmtp {fmtp!r}")
        a = int(lo)
        b = int(hi) if sep else a
        if a > b or b > 255:
            raise SdpError(f"bad telephone-event fmtp {fmtp!r}")
        events.update(range(a, b + 1))
    return frozenset(events)


def _format_event_list(events: frozenset[int]) -> str:
    ranges: list[str] = []
    ordered = sorted(events)
    start = prev = ordered[0]
    for e in [*ordered[1:], -2]:
        if e == prev + 1:
            prev = e
            continue
        ranges.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = e
    return ",".join(ranges)


def _remote_addresses(
    sdp: SessionDescription, m: MediaDescription
) -> tuple[tuple[str, int] | None, tuple[str, int] | None, bool]:
    """(RTP address, RTCP address, receives) of the remote for stream ``m``."""
    conn = sdp.media_connection(m)
    if conn is None:
        raise SdpError("media stream without a connection address")
    if conn.is_hold or m.port == 0:
        return None, None, False
    host = conn.host
    rtcp_port = m.port + 1
    rtcp_host = host
    rtcp = m.rtcp
    if rtcp is not None:
        rtcp_port = rtcp[0]
        if rtcp[1] is not None:
            rtcp_host = rtcp[1]
    return (host, m.port), (rtcp_host, rtcp_port), True


class SdpSession:
    """Our side of the SDP exchanges of one call (dialog): builds offers and
    answers for one audio stream and keeps the ``o=`` line's session id and
    version, which goes up only when our description changes (RFC 3264 §8).
    """

    def __init__(
        self,
        address: str,
        port: int,
        *,
        codecs: tuple[Codec, ...] = DEFAULT_CODECS,
        telephone_event_pt: int = 101,
        dtmf_events: frozenset[int] = DEFAULT_DTMF_EVENTS,
        ptime: int = 20,
        username: str = "voxgate",
        session_name: str = "voxgate",
        rng: random.Random | None = None,
    ) -> None:
        if not codecs:
            raise ValueError("at least one codec is required")
        if not 0 <= port <= 65535:
            raise ValueError("port out of range")
        if not 96 <= telephone_event_pt <= 127:
            raise ValueError("telephone-event needs a dynamic payload type")
        rand = rng if rng is not None else random.SystemRandom()
        self.address = address
        self.port = port
        self.codecs = codecs
        self.telephone_event_pt = telephone_event_pt
        self.dtmf_events = dtmf_events
        self.ptime = ptime
        self.username = username
        self.session_name = session_name
        # Keep ids well inside 63 bits: some peers parse them as signed int64.
        self.session_id = rand.randrange(1, 1 << 62)
        self.session_version = rand.randrange(1, 1 << 31)
        self._last_body: str | None = None
        self._last_offer: SessionDescription | None = None
        self._last_offer_direction = Direction.SENDRECV

    # -- building ----------------------------------------------------------

    def _finish(self, media: list[MediaDescription]) -> SessionDescription:
        addr_type = "IP6" if ":" in self.address else "IP4"
        sdp = SessionDescription(
            origin=Origin(
                username=self.username,
                session_id=self.session_id,
                session_version=0,
                addr_type=addr_type,
                address=self.address,
            ),
            name=self.session_name,
            connection=Connection(addr_type=addr_type, address=self.address),
            media=media,
        )
        body = sdp.serialize()
        if self._last_body is not None and body != self._last_body:
            self.session_version += 1
        self._last_body = body
        sdp.origin.session_version = self.session_version
        return sdp

    def _audio_section(
        self, codecs: list[Codec], te_pt: int | None, te_events: frozenset[int], d: Direction
    ) -> MediaDescription:
        formats = [str(c.payload_type) for c in codecs]
        attrs = [Attribute("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}") for c in codecs]
        if te_pt is not None:
            formats.append(str(te_pt))
            attrs.append(Attribute("rtpmap", f"{te_pt} {TELEPHONE_EVENT}/8000"))
            attrs.append(Attribute("fmtp", f"{te_pt} {_format_event_list(te_events)}"))
        attrs.append(Attribute("ptime", str(self.ptime)))
        attrs.append(Attribute(d.value))
        return MediaDescription(
            media="audio", port=self.port, proto="RTP/AVP", formats=formats, attributes=attrs
        )

    def create_offer(self, direction: Direction = Direction.SENDRECV) -> SessionDescription:
        """An offer for an outbound call or a re-INVITE (``SENDONLY`` to hold)."""
        offer = self._finish(
            [
                self._audio_section(
                    list(self.codecs), self.telephone_event_pt, self.dtmf_events, direction
                )
            ]
        )
        self._last_offer = offer
        self._last_offer_direction = direction
        return offer

    # -- answering ---------------------------------------------------------

    def _pick_codec(self, m: MediaDescription) -> tuple[Codec, int | None, frozenset[int]]:
        maps = m.rtpmaps()
        chosen: Codec | None = None
        te_pt: int | None = None
        te_events: frozenset[int] = frozenset()
        # Offerer's order wins (RFC 3264 §6.1: the answerer SHOULD prefer it).
        for pt in m.payload_types:
            rm = maps.get(pt)
            if rm is None:
                continue
            if rm.encoding.lower() == TELEPHONE_EVENT and rm.clock_rate == 8000:
                if te_pt is None:
                    events = _parse_event_list(m.fmtp(pt)) & self.dtmf_events
                    if events:
                        te_pt, te_events = pt, events
                continue
            if chosen is None:
                for codec in self.codecs:
                    if codec.matches(rm):
                        chosen = Codec(codec.name, pt, codec.clock_rate)
                        break
        if chosen is None:
            raise NoCommonCodec("no common audio codec")
        return chosen, te_pt, te_events

    def answer(
        self, offer: SessionDescription, direction: Direction = Direction.SENDRECV
    ) -> tuple[SessionDescription, MediaParams]:
        """Answer a remote offer. ``direction`` is what we would like (e.g.
        ``SENDRECV`` normally); the result is narrowed by the offer's.
        Raises :class:`NoCommonCodec` when no audio stream is acceptable."""
        sections: list[MediaDescription] = []
        params: MediaParams | None = None
        for m in offer.media:
            usable = (
                params is None
                and m.media == "audio"
                and m.proto.upper() == "RTP/AVP"
                and m.port != 0
            )
            if usable:
                try:
                    codec, te_pt, te_events = self._pick_codec(m)
                except NoCommonCodec:
                    usable = False
            if not usable:
                # Rejected stream: same media and format, port 0 (RFC 3264 §6).
                sections.append(
                    MediaDescription(
                        media=m.media, port=0, proto=m.proto, formats=m.formats[:1] or ["0"]
                    )
                )
                continue
            rtp, rtcp, remote_receives = _remote_addresses(offer, m)
            offered = offer.media_direction(m)
            ours = Direction.from_flags(
                sends=direction.sends and offered.receives and remote_receives,
                receives=direction.receives and offered.sends,
            )
            sections.append(self._audio_section([codec], te_pt, te_events, ours))
            params = MediaParams(
                codec=codec,
                telephone_event_pt=te_pt,
                direction=ours,
                remote_rtp=rtp,
                remote_rtcp=rtcp,
                remote_ptime=m.ptime,
                local_port=self.port,
            )
        if params is None:
            raise NoCommonCodec("no acceptable audio stream in the offer")
        return self._finish(sections), params

    def process_answer(self, answer: SessionDescription) -> MediaParams:
        """Apply the remote's answer to our last offer."""
        offer = self._last_offer
        if offer is None:
            raise SdpError("answer without an outstanding offer")
        if len(answer.media) != len(offer.media):
            raise SdpError("answer has a different number of media streams than the offer")
        m = answer.media[0]
        if m.media != "audio" or m.port == 0:
            raise NoCommonCodec("the answer rejected the audio stream")
        maps = m.rtpmaps()
        codec: Codec | None = None
        te_pt: int | None = None
        for pt in m.payload_types:
            rm = maps.get(pt)
            if rm is None:
                continue
            if rm.encoding.lower() == TELEPHONE_EVENT and rm.clock_rate == 8000:
                te_pt = pt if te_pt is None else te_pt
                continue
            if codec is None:
                for c in self.codecs:
                    if c.matches(rm):
                        codec = Codec(c.name, pt, c.clock_rate)
                        break
        if codec is None:
            raise NoCommonCodec("the answer has none of the offered codecs")
        rtp, rtcp, remote_receives = _remote_addresses(answer, m)
        answered = answer.media_direction(m)
        ours = Direction.from_flags(
            sends=self._last_offer_direction.sends and answered.receives and remote_receives,
            receives=self._last_offer_direction.receives and answered.sends,
        )
        return MediaParams(
            codec=codec,
            telephone_event_pt=te_pt,
            direction=ours,
            remote_rtp=rtp,
            remote_rtcp=rtcp,
            remote_ptime=m.ptime,
            local_port=self.port,
        )
