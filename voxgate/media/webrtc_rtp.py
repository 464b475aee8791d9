"""A G.711 browser call's RTP, sent and received on the frame clock's own turn.

aiortc moves every packet through asyncio tasks: one sender task per call
woken each 20 ms to ``await track.recv()``, then a coroutine chain through
DTLS, SRTP and aioice; inbound, every datagram is queued for the DTLS task.
For 160 bytes of µ-law every 20 ms that plumbing is most of a call's CPU
(``docs/benchmarks.md``). For G.711 calls this module does what the SIP
transport does instead:

* :class:`RtpStream` (sans-IO) numbers the packets: the SSRC aiortc announced
  in the answer (``a=ssrc``), the negotiated payload type, sequence numbers
  and timestamps that advance by one packet and 160 samples per frame, silence
  included, so they are continuous across silence and barge-in; the marker bit
  on the first packet only (the stream never pauses); the ``mid`` header
  extension when it was negotiated, as aiortc sends it.
* :func:`rtp_payload` (sans-IO) reads payload type, sequence number and
  payload out of a decrypted RTP packet (CSRCs, extensions and padding skipped).
* :class:`DirectG711Sender` SRTP-protects each frame with the DTLS
  transport's own SRTP session and ``sendto``\\ s it on the selected ICE pair,
  synchronously, from the clock's tick. aiortc's sender for the call keeps its
  RTCP task (sender reports, SDES, BYE, round-trip time) and is told what was
  sent, so its reports agree with the stream; its RTP task idles.
* :class:`DirectG711Receiver` takes the browser's G.711 packets off the ICE
  connection as they arrive, without aioice's attempt to parse each as STUN
  first (the RTP header is in clear in SRTP, so the payload
  type is checked before decrypting) and unprotects them with the DTLS
  transport's SRTP session: no queue, no task. Everything else (DTLS, RTCP,
  other payload types) goes on to aiortc unchanged.

Both reach into aiortc 1.16 / aioice 0.13 private attributes; ``install``
checks every one and returns False when this aiortc differs, and the call
then uses aiortc's own path, as before. Not kept for directly handled packets:
aiortc's DTLS transport byte/packet counters (``getStats`` transport entry)
and the receiver's statistics (already so with the G.711 tap).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

import pylibsrtp
from aiortc import RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.utils import random32

from voxgate.media import g711
from voxgate.media.frame import FRAME_SAMPLES

__all__ = [
    "DirectG711Receiver",
    "DirectG711Sender",
    "RtpStream",
    "mid_extension",
    "rtp_payload",
]

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_NTP_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
_HEADER = struct.Struct("!BBHII")
_SEQ_TS = struct.Struct("!HI")
_COMPONENT = 1  # RTP (rtcp-mux: the only ICE component)

# Private aiortc names reached into (checked by ``install``).
_RTP_STARTED = "_RTCRtpSender__rtp_started"
_RTP_EXITED = "_RTCRtpSender__rtp_exited"
_NTP_TIMESTAMP = "_RTCRtpSender__ntp_timestamp"
_RTP_TIMESTAMP = "_RTCRtpSender__rtp_timestamp"
_OCTET_COUNT = "_RTCRtpSender__octet_count"
_PACKET_COUNT = "_RTCRtpSender__packet_count"


def mid_extension(ext_id: int, mid: str) -> bytes:
    """The RFC 8285 one-byte-header extension block carrying ``mid`` (padded)."""
    value = mid.encode("ascii")
    if not 1 <= ext_id <= 14 or not 1 <= len(value) <= 16:
        raise ValueError("mid does not fit a one-byte header extension")
    element = bytes([(ext_id << 4) | (len(value) - 1)]) + value
    element += b"\x00" * (-len(element) % 4)
    return b"\xbe\xde" + struct.pack("!H", len(element) // 4) + element


class RtpStream:
    """One outgoing RTP stream's headers; sans-IO (no socket, no clock).

    Each :meth:`packet` is the next 20 ms frame: sequence number + 1,
    timestamp + ``samples``. ``extension`` is a ready header-extension block
    (see :func:`mid_extension`) or empty.
    """

    __slots__ = ("_first", "_prefix", "extension", "octets", "packets", "seq", "ssrc", "timestamp")

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        *,
        seq: int,
        timestamp: int,
        extension: bytes = b"",
    ) -> None:
        if not 0 <= payload_type < 128:
            raise ValueError("payload type out of range")
        self.ssrc = ssrc & 0xFFFFFFFF
        self.seq = seq & 0xFFFF  # of the next packet
        self.timestamp = timestamp & 0xFFFFFFFF  # of the next packet
        self.extension = extension
        self.packets = 0
        self.octets = 0  # payload bytes sent (RTCP sender report)
        self._first = True
        self._prefix = bytes([0x90 if extension else 0x80, payload_type])

    @property
    def last_timestamp(self) -> int:
        """The timestamp of the packet made last."""
        return (self.timestamp - FRAME_SAMPLES) & 0xFFFFFFFF

    def packet(self, payload: bytes, samples: int = FRAME_SAMPLES) -> bytes:
        """The next packet carrying ``payload`` (``samples`` long)."""
        head = self._prefix
        if self._first:
            self._first = False
            head = bytes([head[0], head[1] | 0x80])  # marker: start of the stream
        data = b"".join(
            (head, _SEQ_TS.pack(self.seq, self.timestamp), self.ssrc.to_bytes(4, "big"),
             self.extension, payload)
        )  # fmt: skip
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets += 1
        self.octets += len(payload)
        return data


def rtp_payload(packet: bytes) -> tuple[int, int, bytes] | None:
    """(payload type, sequence number, payload) of a clear RTP packet; None if it is
    not one (version, or lengths that do not add up)."""
    size = len(packet)
    if size < 12 or packet[0] >> 6 != 2:
        return None
    first = packet[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if offset + 4 > size:
            return None
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = size
    if first & 0x20:
        end -= packet[-1]
    if offset > end or end > size:
        return None
    return packet[1] & 0x7F, int.from_bytes(packet[2:4], "big"), packet[offset:end]


class _Route(Protocol):
    """What an aioice nominated pair offers (``CandidatePair``)."""

    remote_addr: tuple[str, int]
    protocol: Any


def _nominated(dtls: RTCDtlsTransport) -> dict[int, _Route] | None:
    connection = getattr(dtls.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    return nominated if isinstance(nominated, dict) else None


class DirectG711Sender:
    """Sends a G.711 call's frames from the caller of :meth:`send` (the clock's tick).

    ``install`` before the connection starts (before ``setLocalDescription``
    returns the answer is fine: aiortc starts its sender on connecting).
    """

    def __init__(
        self,
        sender: RTCRtpSender,
        payload_type: int,
        *,
        alaw: bool = False,
        mid: str | None = None,
        mid_ext_id: int | None = None,
    ) -> None:
        extension = b""
        if mid and mid_ext_id is not None:
            try:
                extension = mid_extension(mid_ext_id, mid)
            except ValueError:
                extension = b""
        self.stream = RtpStream(
            sender._ssrc,
            payload_type,
            seq=random_sequence_number(),
            timestamp=random32(),
            extension=extension,
        )
        self.alaw = alaw
        self.sent = 0
        self.unsent = 0  # frames dropped: transport not (or no longer) connected
        self.send_errors = 0
        self._sender = sender
        self._pair: object = None  # the nominated pair the route below is for
        self._udp: Any = None
        self._addr: tuple[str, int] = ("", 0)

    def install(self) -> bool:
        """Idle aiortc's RTP task for this sender; False (nothing changed) when this
        aiortc lacks what the direct path needs."""
        sender = self._sender
        names = (_RTP_STARTED, _RTP_EXITED, _NTP_TIMESTAMP, _RTP_TIMESTAMP, _OCTET_COUNT)
        if not all(hasattr(sender, name) for name in (*names, _PACKET_COUNT, "_run_rtp")):
            return False
        dtls = sender.transport
        if not hasattr(dtls, "_tx_srtp") or not hasattr(dtls, "_state"):
            return False
        if _nominated(dtls) is None:
            return False
        started: asyncio.Event = getattr(sender, _RTP_STARTED)
        exited: asyncio.Event = getattr(sender, _RTP_EXITED)

        async def idle_rtp(codec: RTCRtpCodecParameters) -> None:
            # What aiortc's ``_run_rtp`` does at its start and end, without the
            # per-frame loop: ``RTCRtpSender.stop`` waits for these events.
            started.set()
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                pass
            finally:
                track = sender.track
                if track is not None:
                    track.stop()
                exited.set()

        sender._run_rtp = idle_rtp  # type: ignore[method-assign]
        return True

    def send(self, ulaw: bytes) -> None:
        """Send one frame now (160 bytes of µ-law); dropped and counted when the
        transport is not connected. Never raises for a transport problem: ICE
        consent and DTLS state end the call, not one failed datagram."""
        dtls = self._sender.transport
        srtp = dtls._tx_srtp
        pair = None
        if dtls._state is State.CONNECTED and srtp is not None:
            nominated = _nominated(dtls)
            pair = nominated.get(_COMPONENT) if nominated else None
        if pair is None:
            self.unsent += 1
            return
        if pair is not self._pair:  # first packet, or ICE chose another pair
            self._pair = pair
            self._udp = pair.protocol.transport
            self._addr = pair.remote_addr
        stream = self.stream
        data = stream.packet(g711.ulaw_to_alaw(ulaw) if self.alaw else ulaw)
        try:
            protected = srtp.protect(data)
            self._udp.sendto(protected, self._addr)
        except (OSError, pylibsrtp.Error, AttributeError):
            self.send_errors += 1
            return
        self.sent += 1
        self._report(stream)

    def _report(self, stream: RtpStream) -> None:
        # aiortc's RTCP task builds its sender reports from these.
        sender = self._sender
        setattr(sender, _NTP_TIMESTAMP, int((time.time() + _NTP_OFFSET) * 4294967296.0))
        setattr(sender, _RTP_TIMESTAMP, stream.last_timestamp)
        setattr(sender, _OCTET_COUNT, stream.octets)
        setattr(sender, _PACKET_COUNT, stream.packets)


class DirectG711Receiver:
    """Hands a G.711 call's incoming packets to ``deliver(payload_type, seq, payload)``
    from the ICE socket's callback; every other datagram goes on to aiortc."""

    def __init__(
        self,
        dtls: RTCDtlsTransport,
        payload_types: set[int] | frozenset[int],
        deliver: Callable[[int, int, bytes], None],
    ) -> None:
        self._dtls = dtls
        self._payload_types = frozenset(payload_types)
        self._deliver = deliver
        self._onward: Callable[[bytes, int], None] | None = None
        self.packets = 0
        self.srtp_errors = 0
        self.malformed = 0

    def install(self) -> bool:
        """Take G.711 packets off the DTLS transport's ICE connection; False (nothing
        changed) when this aiortc/aioice lacks what is needed."""
        connection = getattr(self._dtls.transport, "_connection", None)
        onward = getattr(connection, "data_received", None)
        if connection is None or not callable(onward) or not hasattr(self._dtls, "_rx_srtp"):
            return False
        self._onward = onward
        connection.data_received = self.datagram
        for protocol in getattr(connection, "_protocols", ()):
            self._skip_stun_parse(protocol)
        return True

    def _skip_stun_parse(self, protocol: Any) -> None:
        # aioice tries every datagram as STUN first (parse, ValueError, then data):
        # a first byte of 128-191 is RTP/RTCP, never STUN (RFC 7983), so it goes
        # straight on. Only aioice's host/srflx protocol is taken this way.
        original = getattr(protocol, "datagram_received", None)
        candidate = getattr(protocol, "local_candidate", None)
        component = getattr(candidate, "component", None)
        if not callable(original) or not isinstance(component, int):
            return
        datagram = self.datagram

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if data and 127 < data[0] < 192:
                datagram(data, component)
            else:
                original(data, addr)

        protocol.datagram_received = datagram_received

    def datagram(self, data: bytes, component: int) -> None:
        """One datagram from the ICE connection (aioice's ``data_received``)."""
        # RTCP has packet type 192-223 in the second byte; G.711 payload types
        # (0, 8, with or without marker) never collide with it.
        dtls = self._dtls
        srtp = dtls._rx_srtp
        if (
            len(data) >= 12
            and 128 <= data[0] < 192
            and (data[1] & 0x7F) in self._payload_types
            and srtp is not None
            and dtls._state is State.CONNECTED
        ):
            try:
                clear = srtp.unprotect(data)
            except pylibsrtp.Error:
                self.srtp_errors += 1  # forged, replayed or corrupted
                return
            parsed = rtp_payload(clear)
            if parsed is None:
                self.malformed += 1
                return
            self.packets += 1
            self._deliver(*parsed)
            return
        if self._onward is not None:
            self._onward(data, component)
