from __future__ import annotations

import base64
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.media.dtmf import DtmfEvent, DtmfSource
from voxgate.media.twilio_stream import (
    InboundMedia,
    MarkEcho,
    StreamNotStarted,
    StreamPhase,
    StreamStarted,
    StreamStopped,
    TwilioStreamState,
)

SID = "MZ0123456789abcdef"


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(seq: int = 1, sid: str = SID, **fmt: object) -> str:
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **fmt}
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": sid,
            "start": {
                "accountSid": "AC1",
                "callSid": "CA1",
                "streamSid": sid,
                "tracks": ["inbound"],
                "customParameters": {"token": "tok-1"},
                "mediaFormat": media_format,
            },
        }
    )


def media(seq: int, ts_ms: int, payload: bytes = b"\x10" * 160, sid: str = SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": sid,
            "media": {
                "track": "inbound",
                "chunk": str(seq - 1),
                "timestamp": str(ts_ms),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started() -> TwilioStreamState:
    state = TwilioStreamState()
    assert state.feed(connected(), 0.0) == []
    events = state.feed(start(), 0.0)
    assert isinstance(events[0], StreamStarted)
    return state


def test_full_happy_sequence() -> None:
    state = TwilioStreamState()
    state.feed(connected(), 0.0)
    [ev] = state.feed(start(), 0.0)
    assert isinstance(ev, StreamStarted)
    assert state.next_timeout() is None  # no media yet: nothing to fill
    assert (ev.stream_sid, ev.call_sid, ev.account_sid) == (SID, "CA1", "AC1")
    assert ev.custom_parameters == {"token": "tok-1"}
    for i in range(5):
        [m] = state.feed(media(i + 2, i * 20, bytes([i]) * 160), i * 0.02)
        assert isinstance(m, InboundMedia) and m.payload == bytes([i]) * 160 and not m.synthetic
    dtmf = {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "7",
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    assert state.feed(json.dumps(dtmf), 0.1) == [DtmfEvent("5", 0.0, DtmfSource.TWILIO)]
    mark = {"event": "mark", "streamSid": SID, "sequenceNumber": "8", "mark": {"name": "s1"}}
    assert state.feed(json.dumps(mark), 0.1) == [MarkEcho("s1")]
    stop = {
        "event": "stop",
        "streamSid": SID,
        "sequenceNumber": "9",
        "stop": {"accountSid": "AC1", "callSid": "CA1"},
    }
    assert state.feed(json.dumps(stop), 0.2) == [StreamStopped("stop")]
    assert state.phase is StreamPhase.STOPPED
    assert state.counters.media_frames == 5
    assert sum(state.counters.as_dict().values()) == 5


def test_media_before_start_and_after_stop_counted_and_skipped() -> None:
    state = TwilioStreamState()
    assert state.feed(media(2, 0), 0.0) == []
    assert state.counters.out_of_order == 1
    state.feed(start(), 0.0)
    state.feed(json.dumps({"event": "stop", "streamSid": SID, "sequenceNumber": "3"}), 0.0)
    assert state.feed(media(4, 20), 0.0) == []
    assert state.feed(start(5), 0.0) == []
    assert state.counters.out_of_order == 3


def test_duplicates_and_foreign_stream_skipped() -> None:
    state = started()
    assert len(state.feed(media(2, 0), 0.0)) == 1
    assert state.feed(media(2, 0), 0.0) == []
    assert state.feed(media(3, 20, sid="MZother"), 0.0) == []
    assert state.counters.duplicates == 1 and state.counters.foreign_stream == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"event": 5}',
        '{"event": "media"}',
        '{"event": "media", "media": {"payload": "***notbase64"}}',
        '{"event": "start", "start": []}',
        '{"event": "mark", "mark": {}}',
        b"\xff\xfe",
    ],
)
def test_malformed_counted(text: str | bytes) -> None:
    state = started()
    assert state.feed(text, 0.0) == []
    assert state.counters.malformed == 1


def test_unknown_event_counted_separately() -> None:
    state = started()
    assert state.feed('{"event": "someday", "x": 1}', 0.0) == []
    assert state.counters.unknown_events == 1 and state.counters.malformed == 0


def test_bad_dtmf_digit_counted() -> None:
    state = started()
    bad = {"event": "dtmf", "streamSid": SID, "sequenceNumber": "2", "dtmf": {"digit": "Z"}}
    assert state.feed(json.dumps(bad), 0.0) == []
    assert state.counters.malformed == 1


def test_unsupported_media_format_stops() -> None:
    state = TwilioStreamState()
    events = state.feed(start(encoding="audio/l16", sampleRate=16000), 0.0)
    assert isinstance(events[-1], StreamStopped)
    assert state.phase is StreamPhase.STOPPED


def test_timestamp_gap_filled_with_silence() -> None:
    state = started()
    state.feed(media(2, 0), 0.0)
    events = state.feed(media(3, 100), 0.1)  # 80 ms (4 frames) missing
    assert [e.synthetic for e in events if isinstance(e, InboundMedia)] == [True] * 4 + [False]
    assert events[0].payload == b"\xff" * 160  # type: ignore[union-attr]
    assert state.counters.gaps == 1 and state.counters.gap_frames == 4


def test_huge_timestamp_jump_fill_is_capped() -> None:
    state = started()
    state.feed(media(2, 0), 0.0)
    events = state.feed(media(3, 10**9), 0.02)
    assert len(events) == 2000 // 20 + 1


def test_stall_filled_by_poll_and_not_doubled_when_late_audio_arrives() -> None:
    state = started()
    t = 0.0
    for i in range(10):
        state.feed(media(i + 2, i * 20), t)
        t += 0.02
    assert state.poll(t + 0.05) == []  # within stall allowance
    deadline = state.next_timeout()
    assert deadline is not None and deadline == pytest.approx(0.18 + 0.02 + 0.1)
    filled = state.poll(0.5)  # media silent for ~320 ms
    assert filled and all(e.synthetic for e in filled if isinstance(e, InboundMedia))
    n_filled = len(filled)
    # Last audio (ending at ts 200 ms) arrived at 0.18 s; silence covers up to now - 100 ms.
    assert n_filled == round((0.5 - 0.18 - 0.1) / 0.02)
    # The delayed audio now arrives in a burst: delivered, counted late, and
    # poll does not add more silence for time it already covered.
    for i in range(10, 20):
        events = state.feed(media(i + 2, i * 20), 0.5)
        assert len(events) == 1 and not events[0].synthetic  # type: ignore[union-attr]
    assert state.poll(0.5) == []
    assert state.counters.late_frames >= 1


def test_odd_payload_sizes_rechunked() -> None:
    state = started()
    events = state.feed(media(2, 0, b"\x01" * 100), 0.0)
    assert events == []
    events = state.feed(media(3, 12, b"\x02" * 300), 0.02)
    assert [len(e.payload) for e in events] == [160, 160]  # type: ignore[union-attr]
    stop = json.dumps({"event": "stop", "streamSid": SID, "sequenceNumber": "4"})
    events = state.feed(stop, 0.1)
    assert len(events[0].payload) == 160  # type: ignore[union-attr]
    assert isinstance(events[-1], StreamStopped)


def test_outbound_messages() -> None:
    state = TwilioStreamState()
    with pytest.raises(StreamNotStarted):
        state.media_message(b"\x00")
    state.feed(start(sid='MZ"quoted'), 0.0)
    msg = json.loads(state.media_message(b"\x01\x02" * 80))
    assert msg == {
        "event": "media",
        "streamSid": 'MZ"quoted',
        "media": {"payload": base64.b64encode(b"\x01\x02" * 80).decode()},
    }
    assert json.loads(state.mark_message('end "1"')) == {
        "event": "mark",
        "streamSid": 'MZ"quoted',
        "mark": {"name": 'end "1"'},
    }
    assert json.loads(state.clear_message()) == {"event": "clear", "streamSid": 'MZ"quoted'}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_events = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "x"])


@st.composite
def _frames(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return draw(st.text(max_size=200))
    if kind == 2:
        obj = draw(st.dictionaries(st.text(max_size=12), _json_values, max_size=6))
        obj["event"] = draw(_events)
        return json.dumps(obj)
    # Structurally plausible frames with random field values.
    seq = draw(st.one_of(st.integers(-5, 50).map(str), st.integers(-5, 50), st.text(max_size=3)))
    ts = draw(st.one_of(st.integers(-(10**12), 10**12).map(str), st.text(max_size=4)))
    payload = base64.b64encode(draw(st.binary(max_size=400))).decode()
    return json.dumps(
        {
            "event": "media",
            "streamSid": SID,
            "sequenceNumber": seq,
            "media": {"track": "inbound", "timestamp": ts, "payload": payload},
        }
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(_frames(), max_size=25), st.floats(0, 1000, allow_nan=False))
def test_random_frames_never_raise(frames: list[str | bytes], t0: float) -> None:
    state = TwilioStreamState()
    state.feed(start(), t0)
    now = t0
    for frame in frames:
        now += 0.02
        for event in state.feed(frame, now) + state.poll(now):
            if isinstance(event, InboundMedia):
                assert len(event.payload) == 160
    # Every frame was either used or counted; the state is still usable.
    assert state.feed(
        json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "m"}}), now
    ) in ([MarkEcho("m")], [])
    msgspec.json.decode(state.media_message(b"\xff" * 160))


def test_media_message_bytes_matches_the_text_form() -> None:
    state = TwilioStreamState()
    with pytest.raises(StreamNotStarted):
        state.media_message_bytes(b"\x00")
    state.feed(start(sid='MZ"quoted'), 0.0)
    for frame in (b"\x01\x02" * 80, bytes(range(160)), b"\xff"):
        assert state.media_message_bytes(frame) == state.media_message(frame).encode()
