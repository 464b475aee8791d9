"""The WebRTC channel's pieces: inbound framing and resampling, silence fill,
the clock-to-sender handoff, marks, barge-in, DTMF messages; driven by hand
(``FrameClock.tick``, explicit ``now``), no sleeps."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from av.packet import Packet

from voxgate.media import g711
from voxgate.media.call import Call, CallState, EndReason
from voxgate.media.channel import (
    ChannelClosed,
    ChannelEvent,
    FrameClock,
    InboundAudio,
    MarkReached,
    MediaChannel,
)
from voxgate.media.dtmf import DtmfEvent, DtmfSource
from voxgate.media.webrtc_channel import (
    InboundFramer,
    SenderHandoff,
    WebRtcMediaChannel,
    mono_pcm,
    parse_dtmf_text,
)

SILENCE = b"\xff" * 160


def speech_like(frames: int, seed: int = 3) -> bytes:
    """µ-law audio loud enough to count as speech: a random walk, no two frames alike."""
    rng = np.random.default_rng(seed)
    pcm = np.cumsum(rng.normal(0, 600, frames * 160)).clip(-20000, 20000).astype(np.int16)
    return g711.ulaw_encode(pcm)


def tone(freq: float, rate: int, seconds: float, level: float = 8000.0) -> np.ndarray:  # type: ignore[type-arg]
    t = np.arange(int(rate * seconds)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_hz(ulaw: bytes, rate: int = 8000) -> float:
    pcm = g711.ulaw_decode(ulaw).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[int(np.argmax(spectrum))])


# -- DTMF messages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "digits", "ignored"),
    [
        ("5", "5", 0),
        ("0123456789*#ABCD", "0123456789*#ABCD", 0),
        ("1x2 3\n", "123", 3),
        ("abcd", "", 4),  # lower case is not a key
        ("", "", 0),
        (b"12", "", 2),  # binary messages are not the protocol
        ("1" * 100, "1" * 64, 36),  # one message is looked at up to 64 characters
    ],
)
def test_dtmf_text(message: str | bytes, digits: str, ignored: int) -> None:
    assert parse_dtmf_text(message) == (digits, ignored)


# -- inbound framing -------------------------------------------------------------


def test_opus_rate_audio_becomes_8k_ulaw_frames_with_its_pitch() -> None:
    framer = InboundFramer()
    pcm = tone(440.0, 48000, 1.0)
    frames: list[bytes] = []
    for i in range(50):  # 50 chunks of 20 ms at 48 kHz, as aiortc's Opus decoder gives
        frames += framer.feed(pcm[i * 960 : (i + 1) * 960], 48000, now=i * 0.02)
    # soxr's medium quality holds back ~11 ms once running, a little more at its start.
    assert len(frames) == 48
    assert all(len(f) == 160 for f in frames)
    assert abs(dominant_hz(b"".join(frames[5:])) - 440.0) < 10
    assert framer.counters.inbound_frames == len(frames)


def test_8k_audio_passes_through_byte_for_byte() -> None:
    framer = InboundFramer()
    ulaw = speech_like(10)
    out = framer.feed(g711.ulaw_decode(ulaw), 8000, now=0.0)
    assert b"".join(out) == ulaw  # G.711 decode then encode is lossless


def test_g711_payloads_are_split_never_recoded() -> None:
    framer = InboundFramer()
    ulaw = speech_like(3)
    assert framer.feed_ulaw(ulaw[:160], now=0.0) == [ulaw[:160]]
    assert framer.feed_ulaw(ulaw[160:], now=0.02) == [ulaw[160:320], ulaw[320:]]
    assert framer.feed_ulaw(ulaw[:100], now=0.06) == []  # 10 ms packets: joined
    assert framer.feed_ulaw(ulaw[100:260], now=0.07) == [ulaw[:160]]
    assert framer.counters.inbound_frames == 4


def test_odd_chunks_are_buffered_into_whole_frames() -> None:
    framer = InboundFramer()
    pcm = g711.ulaw_decode(speech_like(3))
    first = framer.feed(pcm[:100], 8000, now=0.0)
    second = framer.feed(pcm[100:], 8000, now=0.06)
    assert first == [] and len(second) == 3


def test_bad_audio_and_rate_changes_are_counted_not_raised() -> None:
    framer = InboundFramer()
    assert framer.feed(np.zeros(160, dtype=np.float32), 8000, 0.0) == []  # type: ignore[arg-type]
    assert framer.feed(np.zeros((2, 160), dtype=np.int16), 8000, 0.0) == []
    assert framer.feed(np.zeros(160, dtype=np.int16), 0, 0.0) == []
    assert framer.counters.bad_audio == 3
    framer.feed(np.zeros(160, dtype=np.int16), 8000, 0.0)
    framer.feed(np.zeros(960, dtype=np.int16), 48000, 0.02)
    assert framer.counters.rate_changes == 1


def test_stall_fills_silence_after_stall_after_and_late_audio_still_counts() -> None:
    framer = InboundFramer(stall_after=0.1)
    assert framer.next_timeout() is None and framer.poll(5.0) == []  # nothing before audio
    pcm = g711.ulaw_decode(speech_like(1))
    assert len(framer.feed(pcm, 8000, now=10.0)) == 1
    due = framer.next_timeout()
    assert due == pytest.approx(10.12)
    assert framer.poll(10.11) == []
    filled = framer.poll(10.2)  # 200 ms with nothing: everything older than 100 ms
    assert filled == [SILENCE] * 5
    assert framer.next_timeout() == pytest.approx(10.22)
    assert framer.poll(10.2) == []  # no double fill
    assert len(framer.feed(pcm, 8000, now=10.21)) == 1  # late audio is delivered
    assert framer.counters.gaps == 1 and framer.counters.gap_frames == 5


def test_stall_fill_is_bounded_per_poll() -> None:
    framer = InboundFramer(stall_after=0.1, max_fill=0.5)
    framer.feed(g711.ulaw_decode(SILENCE), 8000, now=0.0)
    assert len(framer.poll(60.0)) == 25


def test_mono_pcm_takes_the_first_channel_of_packed_stereo() -> None:
    left = np.arange(960, dtype=np.int16)
    stereo = np.stack((left, -left), axis=1).reshape(1, -1)
    frame = AudioFrame.from_ndarray(np.ascontiguousarray(stereo), format="s16", layout="stereo")
    frame.sample_rate = 48000
    assert np.array_equal(mono_pcm(frame), left)
    floats = AudioFrame.from_ndarray(
        np.full((1, 160), 0.5, dtype=np.float32), format="flt", layout="mono"
    )
    assert set(mono_pcm(floats).tolist()) == {16384}


# -- the handoff -------------------------------------------------------------------


def test_handoff_keeps_order_and_reaches_marks_with_the_frame_before() -> None:
    handoff = SenderHandoff(limit=5)
    assert handoff.put_mark("m0")  # nothing waiting: reached at once
    handoff.put(b"a" * 160)
    assert not handoff.put_mark("m1")
    handoff.put(b"b" * 160)
    assert handoff.take() == (b"a" * 160, ["m1"])
    assert handoff.take() == (b"b" * 160, [])
    assert handoff.take() is None


def test_handoff_is_bounded_and_moves_marks_of_dropped_frames_forward() -> None:
    handoff = SenderHandoff(limit=2)
    handoff.put(b"a" * 160)
    handoff.put_mark("after-a")
    handoff.put(b"b" * 160)
    handoff.put(b"c" * 160)  # a goes: the sender fell behind
    assert len(handoff) == 2 and handoff.counters.handoff_dropped == 1
    assert handoff.take() == (b"b" * 160, ["after-a"])


def test_handoff_barge_in_drops_only_what_was_not_handed() -> None:
    handoff = SenderHandoff()
    handoff.put(b"a" * 160)
    handoff.put(SILENCE, synthetic=True)
    handoff.put(b"b" * 160)
    assert handoff.drop_audio() == 2
    assert handoff.take() is None
    assert handoff.counters.silence_frames == 1


# -- the channel ---------------------------------------------------------------------


def make_call() -> Call:
    call = Call(
        "w1", tenant_id="t", agent_id="a", provider="webrtc", from_number="browser",
        to_number="a", now=0.0,
    )  # fmt: skip
    call.answer(0.0)
    return call


class Peer:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def make_channel(clock: FrameClock, **kw: object) -> tuple[WebRtcMediaChannel, Peer]:
    peer = Peer()
    return WebRtcMediaChannel(make_call(), clock, peer.close, **kw), peer  # type: ignore[arg-type]


async def drain(channel: WebRtcMediaChannel) -> list[ChannelEvent]:
    events: list[ChannelEvent] = []
    while len(channel._inbox):
        events.append(await channel._inbox.get())
    return events


async def take(channel: WebRtcMediaChannel) -> bytes:
    """What the RTP sender gets next (µ-law mode)."""
    packet = await asyncio.wait_for(channel.track.recv(), 1)
    assert isinstance(packet, Packet)
    return bytes(packet)


async def test_is_a_media_channel() -> None:
    channel, _ = make_channel(FrameClock())
    assert isinstance(channel, MediaChannel)


async def test_agent_audio_waits_until_connected_then_one_frame_per_tick() -> None:
    clock = FrameClock()
    channel, _ = make_channel(clock, mode="pcmu")
    greeting = speech_like(3)
    await channel.send(greeting)
    await clock.tick()
    assert len(channel.handoff) == 0 and len(channel.outbound) == 3  # not connected yet
    channel.start()
    for i in range(3):
        await clock.tick()
        assert len(channel.handoff) == 1  # never more than a tick's frame waits
        assert await take(channel) == greeting[i * 160 : (i + 1) * 160]
    await clock.tick()  # nothing queued: silence keeps the browser's jitter buffer fed
    assert await take(channel) == SILENCE
    assert clock.active_channels == 1  # stays on the clock while the call is up
    assert channel.frames_out == 3 and channel.counters.silence_frames == 1


async def test_recv_waits_for_the_clock_and_timestamps_advance() -> None:
    clock = FrameClock()
    channel, _ = make_channel(clock, mode="pcmu")
    channel.start()
    waiting = asyncio.ensure_future(channel.track.recv())
    await asyncio.sleep(0)
    assert not waiting.done()  # pull model: the sender waits for our push
    await clock.tick()
    first = await asyncio.wait_for(waiting, 1)
    await clock.tick()
    second = await channel.track.recv()
    assert isinstance(first, Packet) and isinstance(second, Packet)
    assert (first.pts, second.pts) == (0, 160)


@pytest.mark.parametrize("mode", ["pcmu", "pcma", "pcm"])
async def test_sender_modes(mode: str) -> None:
    clock = FrameClock()
    channel, _ = make_channel(clock, mode=mode)
    audio = speech_like(1)
    await channel.send(audio)
    channel.start()
    await clock.tick()
    out = await channel.track.recv()
    if mode == "pcm":
        assert isinstance(out, AudioFrame)
        assert (out.sample_rate, out.samples, out.format.name) == (8000, 160, "s16")
        assert g711.ulaw_encode(out.to_ndarray().reshape(-1)) == audio
    else:
        assert isinstance(out, Packet)
        expected = audio if mode == "pcmu" else g711.ulaw_to_alaw(audio)
        assert bytes(out) == expected


async def test_mark_is_reached_when_the_audio_before_it_is_handed_to_the_sender() -> None:
    clock = FrameClock()
    channel, _ = make_channel(clock, mode="pcmu")
    channel.start()
    await channel.send(speech_like(2))
    channel.mark("sentence-1")
    for _ in range(3):  # the third tick pops the mark: it rides on frame 2, not yet taken
        await clock.tick()
    await take(channel)
    assert await drain(channel) == []
    await take(channel)
    assert await drain(channel) == [MarkReached("sentence-1", played=True)]
    assert not channel.has_pending_audio


async def test_mark_after_audio_already_taken_is_reached_at_once() -> None:
    clock = FrameClock()
    channel, _ = make_channel(clock, mode="pcmu")
    channel.start()
    await channel.send(speech_like(1))
    channel.mark("short")
    await clock.tick()
    await take(channel)
    await clock.tick()
    assert await drain(channel) == [MarkReached("short", played=True)]


async def test_barge_in_drops_the_queue_and_the_handoff_and_reports_unheard_marks() -> None:
    clock = FrameClock()
    channel, _ = make_channel(clock, mode="pcmu")
    channel.start()
    await channel.send(speech_like(50))
    channel.mark("long-prompt")
    await clock.tick()
    assert len(channel.handoff) == 1
    assert channel.clear() == ["long-prompt"]
    assert len(channel.handoff) == 0 and len(channel.outbound) == 0
    await clock.tick()
    assert await take(channel) == SILENCE  # the agent's audio stops at once
    assert await drain(channel) == [MarkReached("long-prompt", played=False)]


async def test_inbound_audio_and_keys_reach_the_agent() -> None:
    clock = FrameClock()
    channel, _ = make_channel(clock)
    ulaw = speech_like(2)
    channel.feed_audio(g711.ulaw_decode(ulaw), 8000, now=1.0)
    channel.feed_dtmf_text("9*z")
    events = await drain(channel)
    audio = [e.payload for e in events if isinstance(e, InboundAudio)]
    assert b"".join(audio) == ulaw
    assert [e for e in events if isinstance(e, DtmfEvent)] == [
        DtmfEvent("9", 0.0, DtmfSource.DATA_CHANNEL),
        DtmfEvent("*", 0.0, DtmfSource.DATA_CHANNEL),
    ]
    assert channel.counters.dtmf_ignored == 1
    assert [e.detail for e in channel.call.events if e.kind == "dtmf"] == ["9", "*"]
    channel._disarm_stall()


async def test_hangup_closes_the_peer_ends_the_track_and_leaves_the_clock() -> None:
    clock = FrameClock()
    channel, peer = make_channel(clock)
    channel.start()
    await channel.send(speech_like(5))
    channel.mark("unheard")
    pending = asyncio.ensure_future(channel.track.recv())
    await asyncio.sleep(0)
    await channel.hangup(EndReason.CALLER_HANGUP)
    assert peer.closed == 1
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pending, 1)
    assert clock.active_channels == 0
    assert channel.call.state is CallState.ENDED
    assert await drain(channel) == [
        MarkReached("unheard", played=False),
        ChannelClosed(EndReason.CALLER_HANGUP),
    ]
