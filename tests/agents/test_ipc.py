from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.agents import ipc


def _all_frames() -> list[ipc.Frame]:
    return [
        ipc.Hello(version=ipc.PROTOCOL_VERSION, pid=42, tenant_id=None, max_calls=4),
        ipc.HelloAck(version=ipc.PROTOCOL_VERSION, tenant_id="t1"),
        ipc.Ping(seq=1, sent_at=1.5),
        ipc.Pong(seq=1, sent_at=1.5, calls=2, rss_bytes=123),
        ipc.EndWorker(reason="drain"),
        ipc.StartCall(
            call_id="c1",
            tenant_id="t1",
            agent_id="a1",
            flow={"schema": "flowspec/1", "nodes": []},
            settings=ipc.CallSettings(barge_in=False, min_silence_ms=300),
        ),
        ipc.EndCall(call_id="c1", reason="bye"),
        ipc.CallEnded(call_id="c1"),
        ipc.AudioIn(call_id="c1", seq=7, ulaw=b"\xff" * 160),
        ipc.AudioOut(call_id="c1", seq=8, ulaw=b"\x7f" * 320, mark="s1"),
        ipc.Mark(call_id="c1", name="s1"),
        ipc.Interrupt(call_id="c1"),
        ipc.SpeechStarted(call_id="c1", at=0.3),
        ipc.SpeechEnded(call_id="c1", at=1.3),
        ipc.Transcript(call_id="c1", text="hello", final=True, start=0.3, end=1.3),
        ipc.AgentSay(call_id="c1", text="Hi.", node="hello", mark="s1"),
        ipc.Turn(
            call_id="c1", index=0, caller_text="hi", start=0.0, end=1.0, latencies={"stt": 0.1}
        ),
        ipc.Dtmf(call_id="c1", digit="5"),
        ipc.Hangup(call_id="c1", reason="done"),
        ipc.Transfer(call_id="c1", target="+15550100"),
        ipc.TransferResult(call_id="c1", ok=False, reason="dial_refused"),
        ipc.Metric(name="stt_seconds", value=0.12, labels={"call": "c1"}),
        ipc.Error(code="boom", message="it broke", call_id="c1"),
    ]


def test_every_frame_round_trips() -> None:
    enc = ipc.FrameEncoder()
    dec = ipc.FrameDecoder()
    frames = _all_frames()
    data = b"".join(enc.encode(f) for f in frames)
    assert dec.feed(data) == frames
    assert dec.buffered == 0


def test_decoder_reassembles_split_input() -> None:
    enc = ipc.FrameEncoder()
    frames = _all_frames()
    data = b"".join(enc.encode(f) for f in frames)
    dec = ipc.FrameDecoder()
    out: list[ipc.Frame] = []
    for i in range(len(data)):
        out.extend(dec.feed(data[i : i + 1]))
    assert out == frames


def test_audio_out_must_be_whole_frames() -> None:
    with pytest.raises(ValueError):
        ipc.AudioOut(call_id="c", seq=0, ulaw=b"\x00" * 100)
    # The same check runs on frames decoded from the wire.
    body = msgspec.msgpack.encode({"type": "audio_out", "call_id": "c", "seq": 0, "ulaw": b"x"})
    with pytest.raises(ipc.MalformedFrame):
        ipc.FrameDecoder().feed(struct.pack(">I", len(body)) + body)


def test_oversize_prefix_is_rejected_before_buffering() -> None:
    dec = ipc.FrameDecoder(max_frame_size=1024)
    with pytest.raises(ipc.FrameTooLarge) as info:
        dec.feed(struct.pack(">I", 1025))
    assert info.value.size == 1025
    # The stream cannot be resynchronised: later input keeps failing.
    with pytest.raises(ipc.FrameTooLarge):
        dec.feed(b"")


def test_encoder_refuses_oversize_frames() -> None:
    enc = ipc.FrameEncoder(max_frame_size=100)
    with pytest.raises(ipc.FrameTooLarge):
        enc.encode(ipc.AudioIn(call_id="c", seq=0, ulaw=b"\x00" * 200))


def test_unknown_tag_is_malformed() -> None:
    body = msgspec.msgpack.encode({"type": "launch_missiles"})
    with pytest.raises(ipc.MalformedFrame):
        ipc.FrameDecoder().feed(struct.pack(">I", len(body)) + body)


def test_version_check() -> None:
    ipc.check_version(ipc.PROTOCOL_VERSION)
    with pytest.raises(ipc.ProtocolVersionError):
        ipc.check_version(ipc.PROTOCOL_VERSION + 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_garbage_bytes_give_typed_errors_only(data: bytes) -> None:
    dec = ipc.FrameDecoder(max_frame_size=4096)
    try:
        frames = dec.feed(data)
    except ipc.FrameError:
        return
    for frame in frames:
        assert isinstance(frame, ipc.Frame.__args__)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.integers(min_value=0, max_value=1000))
def test_prefixed_garbage_bodies(body: bytes, split: int) -> None:
    data = struct.pack(">I", len(body)) + body
    dec = ipc.FrameDecoder()
    try:
        dec.feed(data[:split])
        dec.feed(data[split:])
    except ipc.FrameError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=4))
def test_corrupted_valid_frames(pos: int, junk: bytes) -> None:
    data = bytearray(ipc.FrameEncoder().encode(_all_frames()[5]))
    pos = min(pos, len(data) - 1)
    data[pos : pos + len(junk)] = junk
    with contextlib.suppress(ipc.FrameError):
        ipc.FrameDecoder().feed(bytes(data))


async def _pair(**kwargs: int) -> tuple[ipc.Channel, ipc.Channel]:
    a, b = socket.socketpair()
    return await ipc.Channel.open(a, **kwargs), await ipc.Channel.open(b, **kwargs)


async def test_channel_round_trip_and_eof() -> None:
    left, right = await _pair()
    frames = _all_frames()
    for f in frames:
        await left.send(f)
    got = [await right.recv() for _ in frames]
    assert got == frames
    await left.close()
    with pytest.raises(ipc.ChannelClosed):
        await right.recv()
    await right.close()


async def test_offer_drops_audio_when_queue_full_but_control_waits() -> None:
    left, right = await _pair(send_queue=8, audio_slots=4)
    # No await between offers: the writer cannot run, so the queue fills.
    results = [left.offer(ipc.AudioIn(call_id="c", seq=i, ulaw=b"\xff" * 160)) for i in range(10)]
    assert results == [True] * 4 + [False] * 6
    assert left.stats.audio_dropped_send == 6
    for i in range(6):
        await left.send(ipc.Ping(seq=i))  # fits in the queue beyond the audio share
    await left.send(ipc.Ping(seq=99))  # queue full: waits for the writer, not dropped
    got = [await right.recv() for _ in range(11)]
    assert [f.seq for f in got if isinstance(f, ipc.AudioIn)] == [0, 1, 2, 3]
    assert [f.seq for f in got if isinstance(f, ipc.Ping)] == [0, 1, 2, 3, 4, 5, 99]
    await left.close()
    await right.close()


async def test_receiver_drops_audio_not_control_when_behind() -> None:
    left, right = await _pair(recv_queue=4, send_queue=256, audio_slots=256)
    for i in range(100):
        assert left.offer(ipc.AudioIn(call_id="c", seq=i, ulaw=b"\xff" * 160))
    await left.send(ipc.Hangup(call_id="c"))
    got: list[ipc.Frame] = []
    while not got or not isinstance(got[-1], ipc.Hangup):
        got.append(await right.recv())
        assert len(got) <= 101
    audio = [f for f in got if isinstance(f, ipc.AudioIn)]
    assert right.stats.audio_dropped_recv == 100 - len(audio)
    assert right.stats.audio_dropped_recv > 0
    assert [f.seq for f in audio] == sorted(f.seq for f in audio)
    await left.close()
    await right.close()


async def test_garbage_on_socket_closes_with_typed_cause() -> None:
    a, b = socket.socketpair()
    right = await ipc.Channel.open(b)
    a.setblocking(False)
    a.send(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    with pytest.raises(ipc.ChannelClosed) as info:
        await asyncio.wait_for(right.recv(), 5)
    assert isinstance(info.value.__cause__, ipc.MalformedFrame)
    assert isinstance(right.error, ipc.MalformedFrame)
    a.close()
    await right.close()


async def test_send_after_close_raises() -> None:
    left, right = await _pair()
    await left.close()
    with pytest.raises(ipc.ChannelClosed):
        await left.send(ipc.Ping(seq=1))
    assert not left.offer(ipc.AudioIn(call_id="c", seq=0, ulaw=b""))
    await right.close()
