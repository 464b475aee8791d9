"""The server's peer connection: offer checks, the non-trickle answer, loopback-only
ICE, the prompt receive buffer, DTMF and audio into the channel, and its ending."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack
from av import AudioFrame

from tests.media.test_webrtc_channel import make_call, speech_like
from voxgate.media import g711
from voxgate.media.channel import FrameClock, InboundAudio, MarkReached
from voxgate.media.dtmf import DtmfEvent
from voxgate.media.webrtc_channel import WebRtcMediaChannel
from voxgate.media.webrtc_peer import (
    MAX_OFFER_BYTES,
    G711Tap,
    OfferError,
    PeerOutcome,
    WebRtcPeer,
    add_loopback_candidates,
    check_offer,
)

_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", re.M)


async def client_offer(
    *, loopback: bool = True, codec: str | None = None
) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    if codec is not None:
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == codec])
    pc.createDataChannel("dtmf")
    if loopback:
        await add_loopback_candidates(pc)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, str(pc.localDescription.sdp)


def loopback_only(sdp: str) -> str:
    """The SDP with every candidate but 127.0.0.1 removed: ICE can only use loopback."""
    lines = [
        line
        for line in sdp.split("\r\n")
        if not line.startswith("a=candidate:") or " 127.0.0.1 " in line
    ]
    return "\r\n".join(lines)


async def test_check_offer_accepts_a_browser_offer() -> None:
    pc, offer = await client_offer()
    await pc.close()
    checked = check_offer(offer)
    assert checked.codecs[:1] == ("opus",) and {"pcmu", "pcma"} <= set(checked.codecs)
    assert checked.data_channel


@pytest.mark.parametrize(
    ("sdp", "code"),
    [
        ("", "malformed_sdp"),
        ("x" * (MAX_OFFER_BYTES + 1), "sdp_too_large"),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU\r\n", "malformed_sdp"),
        ("v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 300\r\n", "malformed_sdp"),
        ("v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", "no_audio"),
    ],
)
def test_check_offer_refuses_with_a_code(sdp: str, code: str) -> None:
    with pytest.raises(OfferError) as refused:
        check_offer(sdp)
    assert refused.value.code == code and refused.value.message


async def test_loopback_only_call_connects_carries_audio_and_keys_and_ends() -> None:
    clock = FrameClock()
    client, offer = await client_offer()
    peer = WebRtcPeer()
    channel = WebRtcMediaChannel(make_call(), clock, peer.close)
    started = time.perf_counter()
    answer = await peer.answer(check_offer(loopback_only(offer)), channel)
    assert time.perf_counter() - started < 2.0  # no STUN server asked
    hosts = _CANDIDATE.findall(answer)
    assert "127.0.0.1" in hosts and "a=end-of-candidates" in answer  # non-trickle
    assert "typ srflx" not in answer
    priorities = {
        line.split()[4]: int(line.split()[3])
        for line in answer.split("\r\n")
        if line.startswith("a=candidate:")
    }
    assert priorities["127.0.0.1"] == min(priorities.values())  # real interfaces first
    # G.711 first: no codec work; the G.711 tap takes its packets off the receiver.
    assert peer.codec == "pcmu" and channel.track.mode == "pcmu" and peer.tap is not None
    # ... straight off the ICE socket, and our audio leaves from the clock's tick.
    assert peer.tap.direct is not None and peer.direct is not None
    assert channel.direct is peer.direct
    assert peer.prompt_jitter_buffer  # this aiortc's receive buffer was replaced
    await client.setRemoteDescription(
        RTCSessionDescription(sdp=loopback_only(answer), type="answer")
    )
    try:
        async with asyncio.timeout(10):
            await peer.connected.wait()
            # The client's AudioStreamTrack sends silence: it arrives as caller frames.
            first = await channel._inbox.get()
            while peer.tap.direct.packets < 5:  # once SRTP is keyed, none go through aiortc
                await channel._inbox.get()
        assert isinstance(first, InboundAudio) and len(first.payload) == 160
    finally:
        await client.close()
    assert await asyncio.wait_for(peer.wait_ended(), 10) is PeerOutcome.CLOSED
    await peer.close()
    channel._disarm_stall()


@pytest.mark.parametrize("codec", ["audio/pcmu", "audio/pcma"])
async def test_g711_client_hears_the_audio_sent_from_the_clock(codec: str) -> None:
    clock = FrameClock()
    client, offer = await client_offer(codec=codec)
    heard: asyncio.Queue[AudioFrame] = asyncio.Queue()

    async def listen(track: MediaStreamTrack) -> None:
        while True:
            heard.put_nowait(await track.recv())  # type: ignore[arg-type]

    listening: list[asyncio.Task[None]] = []
    client.on("track", lambda track: listening.append(asyncio.ensure_future(listen(track))))
    peer = WebRtcPeer()
    channel = WebRtcMediaChannel(make_call(), clock, peer.close)
    answer = await peer.answer(check_offer(loopback_only(offer)), channel)
    assert peer.direct is not None
    ssrc = int(re.search(r"a=ssrc:(\d+) ", answer).group(1))  # type: ignore[union-attr]
    assert peer.direct.stream.ssrc == ssrc  # what the answer announced
    await client.setRemoteDescription(
        RTCSessionDescription(sdp=loopback_only(answer), type="answer")
    )
    ticking = asyncio.ensure_future(clock.run())
    speech = speech_like(25)
    # What the client decodes, coded back the way it was sent (lossless per sample).
    encode = g711.alaw_encode if codec == "audio/pcma" else g711.ulaw_encode
    expected = g711.ulaw_to_alaw(speech) if codec == "audio/pcma" else speech
    try:
        async with asyncio.timeout(10):
            await peer.connected.wait()
            channel.start()
            await channel.send(speech)
            channel.mark("said")
            while True:  # silence first, then the speech, frame by frame
                first = encode((await heard.get()).to_ndarray().reshape(-1))
                if first == expected[:160]:
                    break
            got = [first] + [
                encode((await heard.get()).to_ndarray().reshape(-1)) for _ in range(24)
            ]
            assert b"".join(got) == expected
            while not any(
                isinstance(e, MarkReached) and e.played for e in [await channel._inbox.get()]
            ):
                pass
        assert peer.direct.sent > 25 and peer.direct.send_errors == 0
    finally:
        ticking.cancel()
        for task in listening:
            task.cancel()
        await client.close()
        await peer.close()
        channel._disarm_stall()


@pytest.mark.parametrize(
    ("offered", "preferred", "codec", "mode"),
    [
        ("audio/pcma", ("pcmu", "pcma", "opus"), "pcma", "pcma"),
        ("audio/opus", ("pcmu", "pcma", "opus"), "opus", "pcm"),
        (None, ("opus", "pcmu"), "opus", "pcm"),
    ],
)
async def test_answer_codec(
    offered: str | None, preferred: tuple[str, ...], codec: str, mode: str
) -> None:
    client, offer = await client_offer(codec=offered)
    peer = WebRtcPeer(codecs=preferred)
    channel = WebRtcMediaChannel(make_call(), FrameClock(), peer.close)
    try:
        await peer.answer(check_offer(offer), channel)
        assert peer.codec == codec and channel.track.mode == mode
    finally:
        await client.close()
        await peer.close()


async def test_g711_tap_orders_and_maps_payloads() -> None:
    channel = WebRtcMediaChannel(make_call(), FrameClock(), _never)
    tap = G711Tap(channel, {0: False, 8: True})
    ulaw = bytes(range(160))
    tap.on_packet(0, 65535, ulaw)
    tap.on_packet(0, 65535, ulaw)  # duplicate
    tap.on_packet(0, 65534, ulaw)  # older than delivered
    tap.on_packet(8, 0, g711.ulaw_to_alaw(ulaw))  # wraps around; A-law
    got = []
    while len(channel._inbox):
        event = await channel._inbox.get()
        assert isinstance(event, InboundAudio)
        got.append(event.payload)
    assert (tap.packets, tap.late) == (2, 2)
    assert got == [ulaw, g711.alaw_to_ulaw(g711.ulaw_to_alaw(ulaw))]
    channel._disarm_stall()


async def _never() -> None:
    return None


async def test_data_channel_keys_reach_the_channel() -> None:
    clock = FrameClock()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    keys = client.createDataChannel("dtmf")
    other = client.createDataChannel("chat")
    await add_loopback_candidates(client)
    await client.setLocalDescription(await client.createOffer())
    peer = WebRtcPeer()
    channel = WebRtcMediaChannel(make_call(), clock, peer.close)
    answer = await peer.answer(check_offer(client.localDescription.sdp), channel)
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    opened = asyncio.Event()
    other.on("open", opened.set)  # created after ``keys``: open once both are
    try:
        async with asyncio.timeout(10):
            await opened.wait()
            other.send("5")  # another label: not keys
            keys.send("4#")
            digits: list[str] = []
            while len(digits) < 2:
                event = await channel._inbox.get()
                if isinstance(event, DtmfEvent):
                    digits.append(event.digit)
        assert digits == ["4", "#"]
        assert peer.ignored_data_channels == 1
    finally:
        await client.close()
        await peer.close()
        channel._disarm_stall()
