"""Sans-IO RTP/RTCP for one call's audio stream.

:class:`RtpSession` ties the pieces together: it parses what arrives on the
RTP and RTCP sockets, latches onto the remote's real source address
(symmetric RTP, so calls work through NAT), feeds the jitter buffer and the
DTMF receiver, numbers outgoing audio and DTMF packets, and schedules RTCP
reports. It never touches a socket or a clock: the transport passes
datagrams and ``now`` in, sends the :class:`Datagram` values it gets back,
and calls :meth:`RtpSession.handle_timer` at :meth:`RtpSession.next_timeout`.

``now`` is the caller's monotonic clock; ``wallclock_offset`` (Unix time
minus that clock) turns it into NTP time for sender reports.
"""

from __future__ import annotations

import collections
import enum
import random

import msgspec

from voxgate.media import g711
from voxgate.media.frame import FRAME_BYTES_ULAW, Frame
from voxgate.media.jitter import JitterBuffer, JitterStats, PlayoutKind, conceal_ulaw
from voxgate.sip.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStatistics,
    RtcpError,
    RtcpPacket,
    RtcpStats,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    parse_rtcp,
    round_trip_time,
    rtcp_interval,
    serialize_rtcp,
)
from voxgate.sip.rtp import RtpError, RtpPacket, RtpSender, is_rtcp
from voxgate.sip.sdp import MediaParams
from voxgate.sip.telephone_event import (
    DtmfEvent,
    DtmfPacket,
    DtmfReceiver,
    TelephoneEventError,
    digit_to_event,
    dtmf_packets,
)

__all__ = [
    "Datagram",
    "DtmfReceived",
    "MediaTimeout",
    "RemoteBye",
    "RemoteLatched",
    "RtpEvent",
    "RtpSession",
    "RtpSessionConfig",
    "RtpSessionError",
]

Address = tuple[str, int]
COMFORT_NOISE_PT = 13
_ULAW_SILENCE_BYTE = b"\xff"


class RtpSessionError(RuntimeError):
    """Our own misuse of the session (e.g. DTMF without telephone-event)."""


class RtpSessionConfig(msgspec.Struct, frozen=True, kw_only=True):
    # No RTP for this long while we expect it: MediaTimeout (end the call).
    inactivity_timeout: float = 30.0
    # A new SSRC from another address takes over only after the latched
    # source has been silent this long (so a spoofed or stray stream cannot
    # hijack a live call).
    relatch_silence: float = 2.0
    jitter_min_delay: float = 0.04
    jitter_initial_delay: float = 0.06
    jitter_max_delay: float = 0.3
    dtmf_duration_ms: int = 100
    dtmf_gap_ms: int = 60
    # RTCP share of the session bandwidth, octets/s (5% of ~80 kbit/s G.711).
    rtcp_bandwidth: float = 500.0
    cname: str = "voxgate"
    wallclock_offset: float = 0.0


class Datagram(msgspec.Struct, frozen=True):
    data: bytes
    addr: Address
    rtcp: bool = False  # send from the RTCP socket (port + 1)


class RemoteLatched(msgspec.Struct, frozen=True):
    """We now send to ``addr``, where the remote's RTP actually comes from."""

    addr: Address
    ssrc: int


class DtmfReceived(msgspec.Struct, frozen=True):
    event: DtmfEvent


class MediaTimeout(msgspec.Struct, frozen=True):
    """No RTP for ``idle`` seconds although the remote should be sending."""

    idle: float


class RemoteBye(msgspec.Struct, frozen=True):
    ssrc: int
    reason: str | None


RtpEvent = RemoteLatched | DtmfReceived | MediaTimeout | RemoteBye


class _Latch(enum.Enum):
    SDP = "sdp"  # sending to the address from the SDP, nothing received yet
    LATCHED = "latched"


class _DtmfInProgress:
    __slots__ = ("plan", "start", "timestamp")

    def __init__(self, plan: list[DtmfPacket], start: float, timestamp: int) -> None:
        self.plan = collections.deque(plan)
        self.start = start
        self.timestamp = timestamp


class RtpSession:
    """RTP and RTCP of one call (one audio stream, one remote)."""

    def __init__(
        self,
        params: MediaParams,
        *,
        now: float,
        config: RtpSessionConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config if config is not None else RtpSessionConfig()
        self._rng = rng if rng is not None else random.Random()
        self._set_params(params)
        self._sender = RtpSender(params.codec.payload_type, rng=self._rng)
        self._jitter = self._new_jitter_buffer()
        self._rx_stats = ReceptionStatistics()
        self._dtmf_rx = DtmfReceiver()
        self._latch = _Latch.SDP
        self._latched_addr: Address | None = None
        self._latched_ssrc: int | None = None
        self._rtcp_addr: Address | None = None  # where the remote's RTCP came from
        self._last_rx: float = now  # inactivity counts from the start
        self._timed_out = False
        self._dtmf_queue: collections.deque[str] = collections.deque()
        self._dtmf: _DtmfInProgress | None = None
        self._dtmf_next_start = now
        self._sent_since_report = False
        self._next_rtcp = now + self._interval(initial=True)
        self._remote_lost: int | None = None
        self._remote_fraction: float | None = None
        self._remote_jitter_ms: float | None = None
        self._rtt: float | None = None
        self.invalid_packets = 0
        self.foreign_packets = 0  # valid RTP from a source we did not latch to

    def _new_jitter_buffer(self) -> JitterBuffer:
        c = self.config
        return JitterBuffer(
            min_delay=c.jitter_min_delay,
            initial_delay=c.jitter_initial_delay,
            max_delay=c.jitter_max_delay,
        )

    # -- public state --------------------------------------------------------

    @property
    def ssrc(self) -> int:
        return self._sender.ssrc

    @property
    def remote_addr(self) -> Address | None:
        """Where our RTP goes: the latched source, else the SDP address."""
        if self._latched_addr is not None:
            return self._latched_addr
        return self.params.remote_rtp

    @property
    def remote_rtcp_addr(self) -> Address | None:
        if self._rtcp_addr is not None:
            return self._rtcp_addr
        if self._latched_addr is not None:
            # Symmetric RTCP on the port after the latched RTP port.
            return (self._latched_addr[0], self._latched_addr[1] + 1)
        return self.params.remote_rtcp

    @property
    def latched(self) -> bool:
        return self._latch is _Latch.LATCHED

    def update_media(self, params: MediaParams, now: float) -> None:
        """Apply a new offer/answer result (re-INVITE: hold, unhold, new
        address or codec). SSRC and numbering continue."""
        if params.remote_rtp != self.params.remote_rtp:
            # The remote moved: send to the new SDP address until its RTP
            # shows us the real source again.
            self._latch = _Latch.SDP
            self._latched_addr = None
            self._rtcp_addr = None
        if params.codec.payload_type != self.params.codec.payload_type:
            self._sender.payload_type = params.codec.payload_type
        self._set_params(params)
        self._last_rx = now
        self._timed_out = False

    def _set_params(self, params: MediaParams) -> None:
        self.params = params
        # Cached: read on every packet and frame.
        self._audio_pt = params.codec.payload_type
        self._alaw = params.codec.name.upper() == "PCMA"
        self._sends = params.direction.sends

    # -- receiving ------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> list[RtpEvent]:
        """A datagram from the RTP socket (RTCP muxed on it is handled too)."""
        if is_rtcp(data):
            return self.receive_rtcp(data, addr, now)
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.invalid_packets += 1
            return []
        pt = packet.payload_type
        audio_pt = self._audio_pt
        te_pt = self.params.telephone_event_pt
        if pt != audio_pt and pt != te_pt and pt != COMFORT_NOISE_PT:
            self.invalid_packets += 1
            return []
        events: list[RtpEvent] = []
        if not self._accept_source(packet.ssrc, addr, now, events):
            self.foreign_packets += 1
            return events
        self._last_rx = now
        self._timed_out = False
        self._rx_stats.update(
            packet.ssrc,
            packet.sequence_number,
            packet.timestamp,
            now,
            # Event packets keep the start timestamp for the whole event;
            # they would distort the arrival jitter estimate.
            jitter=pt == audio_pt,
        )
        if pt == audio_pt:
            self._jitter.push(
                sequence_number=packet.sequence_number,
                timestamp=packet.timestamp,
                ssrc=packet.ssrc,
                payload=packet.payload,
                now=now,
                payload_type=pt,
            )
        elif pt == te_pt:
            try:
                finished = self._dtmf_rx.receive(packet.timestamp, packet.payload, now)
            except TelephoneEventError:
                self.invalid_packets += 1
                return events
            events += [DtmfReceived(e) for e in finished]
        return events

    def _accept_source(self, ssrc: int, addr: Address, now: float, events: list[RtpEvent]) -> bool:
        if self._latch is _Latch.SDP:
            self._latch = _Latch.LATCHED
            self._latched_addr = addr
            self._latched_ssrc = ssrc
            events.append(RemoteLatched(addr, ssrc))
            return True
        if addr == self._latched_addr:
            # Same source, maybe a restarted stream: follow its new SSRC.
            self._latched_ssrc = ssrc
            return True
        if ssrc != self._latched_ssrc and now - self._last_rx >= self.config.relatch_silence:
            self._latched_addr = addr
            self._latched_ssrc = ssrc
            self._rtcp_addr = None
            events.append(RemoteLatched(addr, ssrc))
            return True
        return False

    def receive_rtcp(self, data: bytes, addr: Address, now: float) -> list[RtpEvent]:
        """A datagram from the RTCP socket."""
        try:
            packets = parse_rtcp(data)
        except RtcpError:
            self.invalid_packets += 1
            return []
        if self._latched_addr is not None and addr[0] != self._latched_addr[0]:
            # RTCP from a host other than the media source: not this call's.
            self.foreign_packets += 1
            return []
        self._rtcp_addr = addr
        events: list[RtpEvent] = []
        for p in packets:
            if isinstance(p, SenderReport | ReceiverReport):
                if isinstance(p, SenderReport):
                    self._rx_stats.on_sender_report(p, now)
                for block in p.reports:
                    if block.ssrc != self._sender.ssrc:
                        continue
                    self._remote_lost = max(0, block.cumulative_lost)
                    self._remote_fraction = block.fraction_lost / 256.0
                    self._remote_jitter_ms = round(block.jitter * 1000.0 / 8000, 3)
                    rtt = round_trip_time(block, now + self.config.wallclock_offset)
                    if rtt is not None:
                        self._rtt = rtt
            elif isinstance(p, Bye):
                for ssrc in p.sources:
                    events.append(RemoteBye(ssrc, p.reason))
        return events

    def next_frame(self, now: float) -> bytes:
        """160 bytes of µ-law to play for the 20 ms tick at ``now``."""
        out = self._jitter.pop(now)
        if out.kind is PlayoutKind.SILENCE:
            return Frame.ulaw_silence()
        payload = out.payload
        if self._alaw:
            payload = g711.alaw_to_ulaw(payload)
        if len(payload) != FRAME_BYTES_ULAW:
            # Only 20 ms packets are negotiated; fit anything else to one frame.
            payload = payload[:FRAME_BYTES_ULAW].ljust(FRAME_BYTES_ULAW, _ULAW_SILENCE_BYTE)
        if out.kind is PlayoutKind.CONCEALED:
            return conceal_ulaw(payload, out.gain)
        return payload

    # -- sending ----------------------------------------------------------------

    def _can_send(self) -> Address | None:
        if not self._sends:
            return None
        return self.remote_addr

    def send_audio(self, ulaw_frame: bytes, now: float) -> Datagram | None:
        """The RTP datagram for one 20 ms µ-law frame, or None when we must
        not send now (on hold, no address yet, or a DTMF digit is playing)."""
        dest = self._can_send()
        if dest is None or self._dtmf_playing(now):
            return None
        if len(ulaw_frame) != FRAME_BYTES_ULAW:
            raise RtpSessionError(f"audio frames are {FRAME_BYTES_ULAW} bytes of µ-law")
        payload = ulaw_frame
        if self._alaw:
            payload = g711.ulaw_to_alaw(ulaw_frame)
        self._sent_since_report = True
        return Datagram(self._sender.send_frame(payload, now), dest)

    def send_dtmf(self, digits: str, now: float) -> None:
        """Queue digits to send as RFC 4733 events (one after another)."""
        if self.params.telephone_event_pt is None:
            raise RtpSessionError("telephone-event was not negotiated for this call")
        for d in digits:
            digit_to_event(d)  # validate all before queueing any
        was_idle = self._dtmf is None and not self._dtmf_queue
        self._dtmf_queue.extend(digits)
        if was_idle:
            self._dtmf_next_start = max(self._dtmf_next_start, now)

    def _dtmf_due(self, now: float) -> list[Datagram]:
        out: list[Datagram] = []
        te_pt = self.params.telephone_event_pt
        for _ in range(64):  # bounded: a few packets per digit at most per call
            if self._dtmf is None:
                if not self._dtmf_queue or now < self._dtmf_next_start:
                    break
                digit = self._dtmf_queue.popleft()
                plan = dtmf_packets(digit, duration_ms=self.config.dtmf_duration_ms)
                start = self._dtmf_next_start
                self._dtmf = _DtmfInProgress(plan, start, self._sender.timestamp_at(start))
            cur = self._dtmf
            if not cur.plan or cur.start + cur.plan[0].at > now:
                break
            p = cur.plan.popleft()
            dest = self._can_send()
            if dest is not None and te_pt is not None:
                data = self._sender.build(te_pt, p.payload, cur.timestamp, marker=p.marker)
                self._sent_since_report = True
                out.append(Datagram(data, dest))
            if not cur.plan:
                self._dtmf = None
                self._dtmf_next_start = cur.start + p.at + self.config.dtmf_gap_ms / 1000
        return out

    def _dtmf_playing(self, now: float) -> bool:
        # While an event plays, audio would talk over the key press (and could
        # carry the caller's own in-band tone); send only the event.
        return self._dtmf is not None or (bool(self._dtmf_queue) and now >= self._dtmf_next_start)

    @property
    def dtmf_pending(self) -> bool:
        return self._dtmf is not None or bool(self._dtmf_queue)

    # -- RTCP ---------------------------------------------------------------------

    def _interval(self, *, initial: bool) -> float:
        return rtcp_interval(
            members=2,
            senders=2,
            rtcp_bandwidth=self.config.rtcp_bandwidth,
            we_sent=True,
            avg_rtcp_size=100.0,
            initial=initial,
            rng=self._rng,
        )

    def _report_packets(self, now: float) -> list[RtcpPacket]:
        block = self._rx_stats.report_block(now)
        blocks = [block] if block is not None else []
        first: RtcpPacket
        if self._sent_since_report:
            first = SenderReport(
                ssrc=self._sender.ssrc,
                ntp_timestamp=ntp_from_unix(now + self.config.wallclock_offset),
                rtp_timestamp=self._sender.timestamp_at(now),
                packet_count=self._sender.packets_sent & 0xFFFFFFFF,
                octet_count=self._sender.octets_sent & 0xFFFFFFFF,
                reports=blocks,
            )
        else:
            first = ReceiverReport(ssrc=self._sender.ssrc, reports=blocks)
        return [first, SourceDescription.cname(self._sender.ssrc, self.config.cname)]

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """DTMF packets and RTCP reports that are due at ``now``."""
        out = self._dtmf_due(now)
        if now >= self._next_rtcp:
            dest = self.remote_rtcp_addr
            if dest is not None:
                out.append(Datagram(serialize_rtcp(self._report_packets(now)), dest, rtcp=True))
                self._sent_since_report = False
            self._next_rtcp = now + self._interval(initial=False)
        return out

    def bye(self, now: float, reason: str | None = None) -> Datagram | None:
        """The final RTCP compound (report + CNAME + BYE) when the call ends."""
        dest = self.remote_rtcp_addr
        if dest is None:
            return None
        packets = self._report_packets(now)
        packets.append(Bye(sources=[self._sender.ssrc], reason=reason))
        return Datagram(serialize_rtcp(packets), dest, rtcp=True)

    # -- timers -----------------------------------------------------------------------

    def _expects_media(self) -> bool:
        return self.params.direction.receives

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timer` / :meth:`datagrams_to_send` next have work."""
        times = [self._next_rtcp]
        if self._dtmf is not None and self._dtmf.plan:
            times.append(self._dtmf.start + self._dtmf.plan[0].at)
        elif self._dtmf_queue:
            times.append(self._dtmf_next_start)
        rx = self._dtmf_rx.next_timeout()
        if rx is not None:
            times.append(rx)
        if self._expects_media() and not self._timed_out:
            times.append(self._last_rx + self.config.inactivity_timeout)
        return min(times)

    def handle_timer(self, now: float) -> list[RtpEvent]:
        """Inactivity and DTMF-receive timeouts."""
        events: list[RtpEvent] = [DtmfReceived(e) for e in self._dtmf_rx.poll(now)]
        idle = now - self._last_rx
        if self._expects_media() and not self._timed_out and idle >= self.config.inactivity_timeout:
            self._timed_out = True
            events.append(MediaTimeout(idle))
        return events

    # -- statistics -----------------------------------------------------------------

    def stats(self) -> RtcpStats:
        """Quality figures for the call record."""
        s = self._rx_stats.snapshot()
        s.packets_sent = self._sender.packets_sent
        s.octets_sent = self._sender.octets_sent
        s.remote_packets_lost = self._remote_lost
        s.remote_fraction_lost = self._remote_fraction
        s.remote_jitter_ms = self._remote_jitter_ms
        s.rtt_ms = None if self._rtt is None else round(self._rtt * 1000.0, 3)
        return s

    def jitter_stats(self) -> JitterStats:
        return self._jitter.stats()
