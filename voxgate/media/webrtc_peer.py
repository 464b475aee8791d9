"""The server side of one browser's ``RTCPeerConnection`` (aiortc), for one call.

* :func:`check_offer` validates a browser's SDP offer before anything is
  spent on it: size, parse, exactly one ``sendrecv`` audio m-line with a codec
  we speak (Opus, PCMU, PCMA), ICE credentials, DTLS fingerprint, RTCP mux,
  at most a data channel besides. A bad offer raises :class:`OfferError`
  (the remote's fault; the route answers 400 with its ``code`` and reason).
* :class:`WebRtcPeer` answers the offer non-trickle (the answer carries every
  candidate: aiortc gathers before ``setLocalDescription`` returns, bounded by
  the caller), plugs the call's :class:`~voxgate.media.webrtc_channel.WebRtcMediaChannel`
  in (its track out, the browser's track and ``dtmf`` data channel in), and
  reports the connection's fate: :attr:`WebRtcPeer.connected` once ICE and
  DTLS are up, :meth:`WebRtcPeer.wait_ended` when the connection closes or
  fails.
* :class:`G711Tap`: a G.711 call's RTP payloads go straight into the channel
  (no decoder thread; off the ICE socket's callback, without aiortc's
  per-packet tasks, where :class:`~voxgate.media.webrtc_rtp.DirectG711Receiver`
  can be installed), and its audio leaves from the frame clock's tick
  (:class:`~voxgate.media.webrtc_rtp.DirectG711Sender`); :func:`no_prefetch`:
  an Opus call's audio reaches the agent without the 80 ms aiortc's receive
  jitter buffer would add.
* :func:`add_loopback_candidates`: aioice never gathers 127.0.0.1, so a
  browser (or test client) on the server's own host with no other interface
  could not connect. One loopback host candidate is added per ICE transport,
  at the lowest host priority, so real interfaces are still tried first.

No STUN server is used unless configured (aiortc would otherwise ask
Google's): host candidates serve loopback and LAN callers; ``--ice-servers``
adds STUN/TURN for callers behind NAT (aiortc uses the first STUN and the
first TURN server given).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aioice.candidate import candidate_priority
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from voxgate.media import g711
from voxgate.media.webrtc_channel import DTMF_LABEL, SenderMode, WebRtcMediaChannel
from voxgate.media.webrtc_rtp import MID_URI, DirectG711Receiver, DirectG711Sender

__all__ = [
    "MAX_OFFER_BYTES",
    "CheckedOffer",
    "G711Tap",
    "OfferError",
    "PeerOutcome",
    "WebRtcPeer",
    "add_loopback_candidates",
    "check_offer",
    "no_prefetch",
]

log = logging.getLogger("voxgate.webrtc")

MAX_OFFER_BYTES = 64 * 1024
"""Largest SDP offer looked at (a browser's is 3-10 KB with a dozen candidates)."""

# Codecs we answer with, by lower-case name, and what the sender hands aiortc.
_SENDER_MODES: dict[str, SenderMode] = {"pcmu": "pcmu", "pcma": "pcma", "opus": "pcm"}
DEFAULT_CODECS = ("pcmu", "pcma", "opus")
"""Answer preference: G.711 first. Every browser offers it; the agent's audio
is 8 kHz G.711 already and its recogniser listens at 8 kHz, so Opus would buy
no quality here, only cost: on this project's hosts an Opus encode took
0.2-0.4 ms of CPU per 20 ms frame per call, and with aiortc each Opus frame
crosses threads twice (decoder thread, executor). G.711 frames cost table
lookups and no thread (``G711Tap``). What Opus would add is loss concealment
on the server's receive side over lossy networks (browsers conceal loss in
G.711 on their side too)."""

_LOOPBACK = "127.0.0.1"
# Lowest local preference for the loopback candidate: every real interface's
# pair is checked first.
_LOOPBACK_LOCAL_PREF = 1


class OfferError(ValueError):
    """The browser's offer cannot be used: ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CheckedOffer:
    """An offer :func:`check_offer` accepted."""

    sdp: str
    codecs: tuple[str, ...]  # the audio codecs we speak, in the offer's order
    data_channel: bool


class G711Tap:
    """A call's G.711 RTP payloads, straight from aiortc's receiver into the channel.

    aiortc would pass each packet through its jitter buffer to a decoder
    thread and back to the loop as a frame: for 160 bytes of µ-law, two
    thread hand-offs per packet, which measured as most of a G.711 call's
    CPU. The tap takes PCMU and PCMA payloads as they arrive instead (A-law
    mapped to µ-law by table), drops duplicates and packets older than the
    newest delivered (counted), and leaves gaps to the channel's stall
    filling. Packets of any other negotiated codec (the browser may send Opus
    while we send G.711) go on to aiortc as before. aiortc's receiver keeps
    no statistics for tapped packets (its RTCP receiver reports then carry no
    report block).
    """

    def __init__(self, channel: WebRtcMediaChannel, payload_types: dict[int, bool]) -> None:
        self.channel = channel
        self.payload_types = payload_types  # G.711 payload type -> is A-law
        self.packets = 0
        self.late = 0
        self.direct: DirectG711Receiver | None = None
        self._last_seq: int | None = None
        self._onward: Callable[[RtpPacket, int], Awaitable[None]] | None = None

    def install(self, receiver: RTCRtpReceiver) -> bool:
        """Take over ``receiver``'s G.711 packets; False if this aiortc cannot be tapped."""
        onward = getattr(receiver, "_handle_rtp_packet", None)
        if not callable(onward):
            return False
        self._onward = onward
        receiver._handle_rtp_packet = self._handle  # type: ignore[method-assign]
        direct = DirectG711Receiver(receiver.transport, set(self.payload_types), self._direct)
        if direct.install():
            # Earlier still: off the ICE socket's callback, without aiortc's
            # per-packet queue and DTLS task (webrtc_rtp).
            self.direct = direct
        return True

    def _direct(self, payload_type: int, seq: int, payload: bytes) -> None:
        if payload_type in self.payload_types:
            self.on_packet(payload_type, seq, payload)

    async def _handle(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if packet.payload_type in self.payload_types:
            self.on_packet(packet.payload_type, packet.sequence_number, packet.payload)
        elif self._onward is not None:
            await self._onward(packet, arrival_time_ms)

    def on_packet(self, payload_type: int, seq: int, payload: bytes) -> None:
        """One G.711 packet (payload type, sequence number, payload)."""
        last = self._last_seq
        if last is not None and not 0 < (seq - last) & 0xFFFF < 0x8000:
            self.late += 1  # duplicate, or older than audio already delivered
            return
        self._last_seq = seq
        self.packets += 1
        alaw = self.payload_types[payload_type]
        self.channel.feed_ulaw(
            g711.alaw_to_ulaw(payload) if alaw else payload,
            asyncio.get_running_loop().time(),
        )


class PeerOutcome(enum.Enum):
    """How a peer connection ended."""

    CLOSED = "closed"  # either side closed it
    FAILED = "failed"  # ICE or DTLS failed (or consent to send was lost)


def check_offer(sdp: str) -> CheckedOffer:
    """Validate a browser's offer; raises :class:`OfferError` (never anything else)."""
    if len(sdp) > MAX_OFFER_BYTES:
        raise OfferError("sdp_too_large", f"the offer is over {MAX_OFFER_BYTES} bytes")
    if "m=" not in sdp or not sdp.lstrip().startswith("v="):
        raise OfferError("malformed_sdp", "not an SDP session description (no v= or m= line)")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser asserts and raises anything on junk
        raise OfferError("malformed_sdp", f"the SDP cannot be parsed ({_why(exc)})") from None
    audio = [m for m in parsed.media if m.kind == "audio" and m.port != 0]
    data = [m for m in parsed.media if m.kind == "application" and m.port != 0]
    other = [m for m in parsed.media if m.kind not in ("audio", "application") and m.port != 0]
    if other:
        raise OfferError(
            "unsupported_media", f"only audio and a data channel are taken, not {other[0].kind}"
        )
    if not audio:
        raise OfferError("no_audio", "the offer has no audio m-line")
    if len(audio) > 1 or len(data) > 1:
        raise OfferError("unsupported_media", "one audio m-line and one data channel at most")
    media = audio[0]
    if media.direction not in (None, "sendrecv"):
        raise OfferError("bad_direction", f"audio must be sendrecv, not {media.direction}")
    codecs = tuple(
        name
        for name in (c.mimeType.partition("/")[2].lower() for c in media.rtp.codecs)
        if name in _SENDER_MODES
    )
    if not codecs:
        raise OfferError("no_common_codec", "no audio codec in common (opus, PCMU or PCMA)")
    for m in (media, *data):
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise OfferError("missing_ice_credentials", "ice-ufrag or ice-pwd is missing")
        if m.dtls is None or not m.dtls.fingerprints:
            raise OfferError("missing_dtls", "a DTLS fingerprint and setup role are required")
    if not media.rtcp_mux:
        raise OfferError("rtcp_mux_required", "audio must use rtcp-mux")
    if data and data[0].profile not in ("UDP/DTLS/SCTP", "DTLS/SCTP"):
        raise OfferError("unsupported_media", f"data channel profile {data[0].profile}")
    return CheckedOffer(sdp=sdp, codecs=codecs, data_channel=bool(data))


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ice_transports(pc: RTCPeerConnection) -> list[RTCIceTransport]:
    found: dict[int, RTCIceTransport] = {}
    for transceiver in pc.getTransceivers():
        ice = transceiver.sender.transport.transport
        found[id(ice)] = ice
    if pc.sctp is not None:
        ice = pc.sctp.transport.transport
        found[id(ice)] = ice
    return list(found.values())


async def add_loopback_candidates(pc: RTCPeerConnection) -> int:
    """Give each ICE transport of ``pc`` a 127.0.0.1 host candidate; call after the
    transports exist (offer set or tracks added), before ``setLocalDescription``.

    Returns how many were added (0 where loopback cannot be bound). Uses aioice's
    gathering for one address and adds the candidate to the connection's local
    list, which ``gather_candidates`` then extends with the real interfaces.
    """
    added = 0
    for ice in _ice_transports(pc):
        connection = ice.iceGatherer._connection
        if ice.iceGatherer.state != "new":
            continue  # gathered already: too late to add
        candidates = await connection.get_component_candidates(component=1, addresses=[_LOOPBACK])
        for candidate in candidates:
            candidate.priority = candidate_priority(1, "host", _LOOPBACK_LOCAL_PREF)
        connection._local_candidates += candidates
        added += len(candidates)
    return added


def no_prefetch(receiver: RTCRtpReceiver) -> bool:
    """Make ``receiver`` hand on each audio frame as soon as the next packet shows it
    complete; False when this aiortc has no such buffer to replace.

    aiortc's audio jitter buffer holds four complete frames before it releases
    the oldest (80 ms on every caller word: turn latency and barge-in). We play
    nothing out on the server side (the agent takes frames as they come and
    :class:`~voxgate.media.webrtc_channel.InboundFramer` fills stalls), so
    smoothing buys nothing; reordering is still handled (the buffer is kept in
    sequence order whatever its prefetch).
    """
    name = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, name, None)
    if not isinstance(current, JitterBuffer):
        return False
    setattr(receiver, name, JitterBuffer(capacity=current.capacity, prefetch=0))
    return True


def _codec_capabilities(names: Sequence[str]) -> list[RTCRtpCodecCapability]:
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    preferred: list[RTCRtpCodecCapability] = []
    for name in names:
        preferred.extend(c for c in capabilities if c.mimeType.lower() == f"audio/{name}")
    return preferred


def _answer_codecs(sdp: str) -> list[tuple[str, int]]:
    """Our answer's audio codecs (lower-case name, payload type), preferred first:
    the first is the one we send with; the browser may send with any of them."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "audio":
            return [
                (c.mimeType.partition("/")[2].lower(), c.payloadType)
                for c in media.rtp.codecs
                if c.payloadType is not None
            ]
    return []


def _answer_extension_id(sdp: str, uri: str) -> int | None:
    """The id our answer gives the audio header extension ``uri`` (None: not negotiated)."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "audio":
            for extension in media.rtp.headerExtensions:
                if extension.uri == uri:
                    return extension.id
    return None


class WebRtcPeer:
    """One call's peer connection, answering a browser's offer (module docstring)."""

    def __init__(
        self,
        ice_servers: Sequence[RTCIceServer] = (),
        *,
        loopback: bool = True,
        codecs: Sequence[str] = DEFAULT_CODECS,
        tap_g711: bool = True,
        direct_g711: bool = True,
    ) -> None:
        # An explicit empty list: with None, aiortc would ask Google's STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self._loopback = loopback
        self._codecs = tuple(c.lower() for c in codecs if c.lower() in _SENDER_MODES)
        self.connected = asyncio.Event()
        self.outcome: PeerOutcome | None = None
        self._ended = asyncio.Event()
        self.codec: str | None = None
        self.prompt_jitter_buffer = False
        self._tap_g711 = tap_g711
        self._direct_g711 = direct_g711
        self.direct: DirectG711Sender | None = None
        self.tap: G711Tap | None = None
        self.channel: WebRtcMediaChannel | None = None
        self.ignored_data_channels = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self.pc.on("connectionstatechange", self._state_changed)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)

    async def answer(self, offer: CheckedOffer, channel: WebRtcMediaChannel) -> str:
        """Apply ``offer``, plug ``channel`` in and return the answer SDP (with every
        candidate). Raises :class:`OfferError` when aiortc refuses the offer; bound
        the wait with a timeout (gathering against a STUN/TURN server can take seconds).
        """
        self.channel = channel
        pc = self.pc
        transceiver = pc.addTransceiver(channel.track, direction="sendrecv")
        transceiver.setCodecPreferences(_codec_capabilities(self._codecs))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, OperationError, KeyError...
            raise OfferError("bad_offer", f"the offer was refused ({_why(exc)})") from None
        self.prompt_jitter_buffer = no_prefetch(transceiver.receiver)
        if self._loopback:
            await add_loopback_candidates(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        sdp = pc.localDescription.sdp
        negotiated = _answer_codecs(sdp)
        self.codec = negotiated[0][0] if negotiated else None
        channel.track.mode = _SENDER_MODES.get(self.codec or "", "pcm")
        g711_types = {pt: name == "pcma" for name, pt in negotiated if name in ("pcmu", "pcma")}
        if negotiated and self.codec in ("pcmu", "pcma") and self._direct_g711:
            direct = DirectG711Sender(
                transceiver.sender,
                negotiated[0][1],
                alaw=self.codec == "pcma",
                mid=transceiver.mid,
                mid_ext_id=_answer_extension_id(sdp, MID_URI),
            )
            if direct.install():
                self.direct = direct
                channel.direct = direct
        if g711_types and self._tap_g711:
            tap = G711Tap(channel, g711_types)
            if tap.install(transceiver.receiver):
                self.tap = tap
        return sdp

    # -- events ----------------------------------------------------------------
    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state == "failed":
            self._end(PeerOutcome.FAILED)
        elif state == "closed":
            self._end(PeerOutcome.CLOSED)

    def _end(self, outcome: PeerOutcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self._ended.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        channel = self.channel
        if track.kind != "audio" or channel is None:
            return  # (with a G.711 tap, the track gets only non-G.711 frames)
        self._spawn(channel.pull(track))

    def _on_datachannel(self, data: RTCDataChannel) -> None:
        channel = self.channel
        if data.label != DTMF_LABEL or channel is None:
            self.ignored_data_channels += 1
            return
        data.on("message", channel.feed_dtmf_text)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- waiting and closing ---------------------------------------------------------
    async def wait_ended(self) -> PeerOutcome:
        """Until the connection closes or fails."""
        await self._ended.wait()
        return self.outcome or PeerOutcome.CLOSED

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def close(self) -> None:
        """Close the connection (idempotent; concurrent callers wait for the same close)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.pc.close()
        except Exception:
            log.exception("closing a peer connection failed")
        self._end(PeerOutcome.CLOSED)
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
