from __future__ import annotations

import pytest

from voxgate.media.outqueue import OutboundMark, OutboundQueue, OutboundQueueFull


def frames(n: int, byte: int = 0x10) -> bytes:
    return bytes([byte]) * (160 * n)


def test_push_splits_into_frames_in_order() -> None:
    q = OutboundQueue()
    assert q.push(frames(2, 1) + frames(1, 2)) == 3
    assert len(q) == 3
    assert q.pop() == frames(1, 1)
    assert q.pop() == frames(1, 1)
    assert q.pop() == frames(1, 2)
    assert q.pop() is None
    assert q.frames_sent == 3


def test_partial_frame_waits_then_mark_pads_with_silence() -> None:
    q = OutboundQueue()
    assert q.push(b"\x01" * 100) == 0
    assert q.push(b"\x01" * 100) == 1
    q.push_mark("m1")
    assert q.pop() == b"\x01" * 160
    padded = q.pop()
    assert padded == b"\x01" * 40 + b"\xff" * 120
    mark = q.pop()
    assert isinstance(mark, OutboundMark) and mark.name == "m1" and mark.position == 2


def test_bounded_push_is_all_or_nothing() -> None:
    q = OutboundQueue(max_frames=5)
    q.push(frames(4))
    with pytest.raises(OutboundQueueFull):
        q.push(frames(2))
    assert len(q) == 4
    q.push(frames(1))
    assert q.space == 0
    with pytest.raises(OutboundQueueFull):
        q.push(frames(1))


def test_marks_bounded() -> None:
    q = OutboundQueue(max_marks=2)
    q.push_mark("a")
    q.push_mark("b")
    with pytest.raises(OutboundQueueFull):
        q.push_mark("c")


def test_pop_frame_returns_marks_before_frame() -> None:
    q = OutboundQueue()
    q.push(frames(1))
    q.push_mark("s1")
    q.push(frames(1, 2))
    q.push_mark("s2")
    frame, marks = q.pop_frame()
    assert frame == frames(1) and marks == []
    frame, marks = q.pop_frame()
    assert frame == frames(1, 2) and [m.name for m in marks] == ["s1"]
    frame, marks = q.pop_frame()
    assert frame is None and [m.name for m in marks] == ["s2"]
    assert q.is_empty


def test_flush_returns_queued_and_in_flight_marks_in_order() -> None:
    q = OutboundQueue()
    q.push(frames(2))
    q.push_mark("heard")
    q.push(frames(2))
    q.push_mark("sent-not-heard")
    q.push(frames(3))
    q.push_mark("never-sent")
    q.push(frames(1))
    for _ in range(5):
        q.pop_frame()
    assert q.mark_played("heard")
    assert q.played_position == 2
    result = q.flush()
    assert result.dropped_marks == ["sent-not-heard", "never-sent"]
    assert result.dropped_frames == 3
    assert len(q) == 0 and q.pending_marks == 0 and not q.has_pending_audio
    # An echo Twilio sends for a cleared mark is not a "reached".
    assert not q.mark_played("sent-not-heard")


def test_mark_played_confirms_earlier_marks_too() -> None:
    q = OutboundQueue()
    for name in ("a", "b", "c"):
        q.push(frames(1))
        q.push_mark(name)
    while q.pop() is not None:
        pass
    assert q.pending_marks == 3
    assert q.mark_played("b")
    assert q.pending_marks == 1
    assert not q.mark_played("a")
    assert q.played_position == 2


def test_positions_after_flush_continue_from_sent() -> None:
    q = OutboundQueue()
    q.push(frames(3))
    q.pop()
    q.flush()
    q.push(frames(1))
    q.push_mark("x")
    q.pop()
    mark = q.pop()
    assert isinstance(mark, OutboundMark) and mark.position == 2


def test_flush_on_empty_queue() -> None:
    q = OutboundQueue()
    result = q.flush()
    assert result.dropped_frames == 0 and result.dropped_marks == []
