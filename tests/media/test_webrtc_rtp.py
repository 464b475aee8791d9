"""G.711 RTP sent from the frame clock's tick and taken off the ICE socket: headers
checked with aiortc's own RTP parser, SRTP with real libsrtp sessions, the clock
driven by hand (``FrameClock.tick``), no sleeps."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aioice.candidate import Candidate
from aioice.ice import StunProtocol
from aiortc import RTCCertificate, RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from tests.media.test_webrtc_channel import SILENCE, drain, make_channel, speech_like
from voxgate.media import g711
from voxgate.media.channel import FrameClock, MarkReached
from voxgate.media.webrtc_rtp import (
    MID_URI,
    DirectG711Receiver,
    DirectG711Sender,
    RtpStream,
    mid_extension,
    rtp_payload,
)

KEY = bytes(range(30))  # AES-128 key and salt (SRTP_AES128_CM_SHA1_80)


def srtp(outbound: bool) -> Session:
    kind = Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND
    return Session(
        Policy(key=KEY, ssrc_type=kind, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    )


def extension_map(mid_id: int = 1) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpSendParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(mid_id, MID_URI)])
    )
    return extensions


# -- the stream's headers ---------------------------------------------------------


def test_stream_headers_parse_with_aiortc_and_continue_through_wraparound() -> None:
    stream = RtpStream(
        0xDEADBEEF, 0, seq=65534, timestamp=0xFFFFFF00, extension=mid_extension(1, "0")
    )
    packets = [RtpPacket.parse(stream.packet(bytes([i]) * 160), extension_map()) for i in range(3)]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0]
    assert [p.timestamp for p in packets] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]
    assert [p.marker for p in packets] == [1, 0, 0]  # the stream starts once, never pauses
    assert {p.ssrc for p in packets} == {0xDEADBEEF} and {p.payload_type for p in packets} == {0}
    assert {p.extensions.mid for p in packets} == {"0"}
    assert packets[2].payload == bytes([2]) * 160
    assert (stream.packets, stream.octets, stream.last_timestamp) == (3, 480, 0x40)


def test_stream_without_extension_is_a_plain_12_byte_header() -> None:
    packet = RtpStream(1, 8, seq=0, timestamp=0).packet(SILENCE)
    assert len(packet) == 12 + 160 and packet[0] == 0x80 and packet[1] == 0x88


def test_mid_extension_refuses_what_does_not_fit() -> None:
    assert len(mid_extension(14, "x" * 16)) % 4 == 0
    for ext_id, mid in ((0, "0"), (15, "0"), (1, ""), (1, "x" * 17)):
        with pytest.raises(ValueError):
            mid_extension(ext_id, mid)


@pytest.mark.parametrize("padding", [0, 4])
def test_rtp_payload_skips_csrcs_extensions_and_padding(padding: int) -> None:
    packet = RtpPacket(payload_type=8, sequence_number=4242, timestamp=1, ssrc=7)
    packet.csrc = [1, 2]
    packet.extensions.mid = "audio"
    packet.payload = b"\x55" * 160
    packet.padding_size = padding
    data = packet.serialize(extension_map(3))
    assert rtp_payload(data) == (8, 4242, b"\x55" * 160)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80" * 11,  # shorter than a header
        b"\x40" + b"\x00" * 20,  # version 1
        b"\x90\x00" + b"\x00" * 10 + b"\xbe\xde\x00\x09",  # extension longer than the packet
        b"\xa0\x00" + b"\x00" * 10 + b"\x00\xff",  # padding longer than the packet
    ],
)
def test_rtp_payload_refuses_what_is_not_rtp(data: bytes) -> None:
    assert rtp_payload(data) is None


# -- the direct sender on a real aiortc sender --------------------------------------


class FakeUdp:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.fail = False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail:
            raise OSError("network is unreachable")
        self.sent.append((data, addr))


class FakeProtocol:
    """aioice's ``StunProtocol`` as a sender sees it: its datagram transport, and
    ``send_data`` (what aiortc's own RTCP goes through)."""

    def __init__(self, udp: FakeUdp) -> None:
        self.transport = udp

    async def send_data(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


class FakePair:
    """What aioice's nominated ``CandidatePair`` offers the sender."""

    def __init__(self, udp: FakeUdp) -> None:
        self.protocol = FakeProtocol(udp)
        self.remote_addr = ("192.0.2.7", 50000)


class Transports:
    """A real ICE + DTLS transport pair of aiortc, made 'connected' by hand: SRTP
    sessions with a known key, a nominated pair that records datagrams."""

    def __init__(self) -> None:
        self.ice = RTCIceTransport(RTCIceGatherer())
        self.dtls = RTCDtlsTransport(self.ice, [RTCCertificate.generateCertificate()])
        self.udp = FakeUdp()
        self.connection: Any = self.ice._connection

    def connect(self) -> None:
        self.dtls._state = State.CONNECTED
        self.dtls._tx_srtp = srtp(outbound=True)
        self.dtls._rx_srtp = srtp(outbound=False)
        self.connection._nominated[1] = FakePair(self.udp)


def parameters(mid: str = "0") -> RTCRtpSendParameters:
    return RTCRtpSendParameters(
        codecs=[RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)],
        headerExtensions=[RTCRtpHeaderExtensionParameters(1, MID_URI)],
        muxId=mid,
        rtcp=RTCRtcpParameters(cname="test", ssrc=1, mux=True),
    )


def received(transports: Transports) -> list[RtpPacket]:
    """What a receiver with the call's SRTP key gets out of the datagrams sent."""
    session = srtp(outbound=False)
    return [
        RtpPacket.parse(session.unprotect(data), extension_map()) for data, _ in transports.udp.sent
    ]


async def direct_channel(
    alaw: bool = False,
) -> tuple[Any, FrameClock, DirectG711Sender, Transports, RTCRtpSender]:
    transports = Transports()
    clock = FrameClock()
    channel, _ = make_channel(clock, mode="pcma" if alaw else "pcmu")
    sender = RTCRtpSender(channel.track, transports.dtls)
    direct = DirectG711Sender(sender, 8 if alaw else 0, alaw=alaw, mid="0", mid_ext_id=1)
    assert direct.install()
    channel.direct = direct
    return channel, clock, direct, transports, sender


async def test_frames_leave_on_the_tick_srtp_protected_with_the_announced_ssrc() -> None:
    channel, clock, direct, transports, sender = await direct_channel()
    transports.connect()
    channel.start()
    speech = speech_like(2)
    await channel.send(speech)
    for _ in range(3):
        await clock.tick()  # each tick's frame is on the wire when tick() returns
    packets = received(transports)
    assert [p.payload for p in packets] == [speech[:160], speech[160:], SILENCE]
    assert {p.ssrc for p in packets} == {sender._ssrc}  # the a=ssrc of the answer
    assert {p.extensions.mid for p in packets} == {"0"}
    assert {addr for _, addr in transports.udp.sent} == {("192.0.2.7", 50000)}
    assert len(channel.handoff) == 0 and direct.sent == 3
    # aiortc's RTCP task reports what was sent.
    assert sender._RTCRtpSender__packet_count == 3  # type: ignore[attr-defined]
    assert sender._RTCRtpSender__octet_count == 480  # type: ignore[attr-defined]
    assert sender._RTCRtpSender__rtp_timestamp == packets[-1].timestamp  # type: ignore[attr-defined]
    assert sender._RTCRtpSender__ntp_timestamp > 0  # type: ignore[attr-defined]


async def test_sequence_and_timestamp_run_on_through_silence_and_barge_in() -> None:
    channel, clock, _, transports, _ = await direct_channel()
    transports.connect()
    channel.start()
    await clock.tick()  # silence
    await channel.send(speech_like(50))
    channel.mark("long-prompt")
    await clock.tick()
    await clock.tick()
    assert channel.clear() == ["long-prompt"]
    await clock.tick(2)  # a late tick: two frames due
    await channel.send(speech_like(1, seed=9))
    await clock.tick()
    packets = received(transports)
    assert len(packets) == 6
    seqs = [p.sequence_number for p in packets]
    stamps = [p.timestamp for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(stamps))
    assert [p.marker for p in packets] == [1, 0, 0, 0, 0, 0]
    assert [p.payload == SILENCE for p in packets] == [True, False, False, True, True, False]
    assert await drain(channel) == [MarkReached("long-prompt", played=False)]


async def test_mark_is_reached_when_its_audio_is_sent() -> None:
    channel, clock, _, transports, _ = await direct_channel()
    transports.connect()
    channel.start()
    await channel.send(speech_like(2))
    channel.mark("sentence")
    await clock.tick()
    assert await drain(channel) == []
    await clock.tick()
    assert len(transports.udp.sent) == 2
    await clock.tick()  # the tick that pops the mark: everything before it is out
    assert await drain(channel) == [MarkReached("sentence", played=True)]


async def test_alaw_call_sends_alaw() -> None:
    channel, clock, _, transports, _ = await direct_channel(alaw=True)
    transports.connect()
    channel.start()
    speech = speech_like(1)
    await channel.send(speech)
    await clock.tick()
    (packet,) = received(transports)
    assert packet.payload_type == 8 and packet.payload == g711.ulaw_to_alaw(speech)


async def test_nothing_is_sent_before_or_after_the_transport_is_connected() -> None:
    channel, clock, direct, transports, _ = await direct_channel()
    channel.start()
    await clock.tick()  # DTLS not up yet
    transports.connect()
    await clock.tick()
    transports.udp.fail = True
    await clock.tick()  # one failed datagram does not end the call
    transports.udp.fail = False
    transports.dtls._state = State.CLOSED
    await clock.tick()
    assert (direct.unsent, direct.sent, direct.send_errors) == (2, 1, 1)
    assert not channel.closed and clock.active_channels == 1
    # The packet that failed used no sequence number: what the receiver sees is continuous.
    assert len(received(transports)) == 1


async def test_aiortc_sender_starts_idle_and_stops_with_a_bye() -> None:
    channel, clock, _, transports, sender = await direct_channel()
    transports.connect()
    await sender.send(parameters())
    channel.start()
    await clock.tick()
    await asyncio.wait_for(sender.stop(), 5)  # its idle RTP task exits on cancel
    assert channel.track.readyState == "ended"
    session = srtp(outbound=False)
    kinds = []
    for data, _ in transports.udp.sent:
        if 192 <= data[1] <= 223:
            kinds.append(data[1])
            session.unprotect_rtcp(data)
        else:
            kinds.append("rtp")
    assert kinds == ["rtp", 203]  # one frame from the tick, then aiortc's RTCP BYE


def test_install_refuses_an_aiortc_without_what_it_needs() -> None:
    class Bare:
        _ssrc = 1

    assert not DirectG711Sender(Bare(), 0).install()  # type: ignore[arg-type]


# -- the direct receiver -------------------------------------------------------------


def test_receiver_takes_g711_off_the_socket_and_passes_the_rest_on() -> None:
    transports = Transports()
    got: list[tuple[int, int, bytes]] = []
    onward: list[bytes] = []
    transports.connection.data_received = lambda data, component: onward.append(data)
    receiver = DirectG711Receiver(transports.dtls, {0, 8}, lambda *p: got.append(p))
    assert receiver.install()
    transports.connect()
    browser = srtp(outbound=True)
    stream = RtpStream(99, 0, seq=10, timestamp=0, extension=mid_extension(1, "0"))
    dtls_record = b"\x17\xfe\xfd" + b"\x00" * 20
    opus = RtpStream(100, 111, seq=500, timestamp=0)
    for data in (
        browser.protect(stream.packet(b"\x01" * 160)),
        dtls_record,
        browser.protect(opus.packet(b"\x02" * 40)),
        browser.protect(stream.packet(b"\x03" * 160))[:-1],  # auth tag broken
        browser.protect(stream.packet(b"\x04" * 160)),
    ):
        transports.connection.data_received(data, 1)
    assert got == [(0, 10, b"\x01" * 160), (0, 12, b"\x04" * 160)]
    assert onward[0] == dtls_record and len(onward) == 2  # DTLS and Opus go to aiortc
    assert (receiver.packets, receiver.srtp_errors) == (2, 1)


def test_receiver_leaves_packets_to_aiortc_until_srtp_is_keyed() -> None:
    transports = Transports()
    onward: list[bytes] = []
    transports.connection.data_received = lambda data, component: onward.append(data)
    got: list[tuple[int, int, bytes]] = []
    receiver = DirectG711Receiver(transports.dtls, {0}, lambda *p: got.append(p))
    assert receiver.install()
    early = RtpStream(5, 0, seq=1, timestamp=0).packet(SILENCE)
    transports.connection.data_received(early, 1)
    assert onward == [early] and got == []


async def test_receiver_takes_rtp_off_aioice_protocols_without_trying_stun() -> None:
    transports = Transports()
    protocol = StunProtocol(transports.connection)
    protocol.local_candidate = Candidate(
        foundation="1", component=1, transport="udp", priority=1, host="127.0.0.1",
        port=5000, type="host",
    )  # fmt: skip
    transports.connection._protocols.append(protocol)
    onward: list[bytes] = []
    transports.connection.data_received = lambda data, component: onward.append(data)
    got: list[tuple[int, int, bytes]] = []
    receiver = DirectG711Receiver(transports.dtls, {0}, lambda *p: got.append(p))
    assert receiver.install()
    transports.connect()
    browser = srtp(outbound=True)
    rtp = browser.protect(RtpStream(5, 0, seq=1, timestamp=0).packet(SILENCE))
    protocol.datagram_received(rtp, ("127.0.0.1", 6000))
    dtls_record = b"\x16\xfe\xfd" + b"\x00" * 20  # not STUN either: aioice passes it on
    protocol.datagram_received(dtls_record, ("127.0.0.1", 6000))
    assert got == [(0, 1, SILENCE)] and onward == [dtls_record]
