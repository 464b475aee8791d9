"""The phone playout model, driven by a fake clock."""

from __future__ import annotations

import pytest

from loadtest.playback import PlaybackBuffer, PlaybackState

F = 0.02


def test_audio_plays_after_prebuffer_in_slots() -> None:
    pb = PlaybackBuffer(0.0, prebuffer_s=0.04)
    pb.push(b"\x01" * 480, now=0.005)
    step = pb.advance(0.04)  # slots at 0, 20, 40 ms; playout from 45 ms
    assert [s.filled for s in step.slots] == [0, 0, 0]
    step = pb.advance(0.10)  # slots 60, 80, 100 ms
    assert [s.filled for s in step.slots] == [160, 160, 160]
    assert pb.state is PlaybackState.STARVED or pb.buffered_bytes == 0


def test_mark_completes_only_after_its_audio_played() -> None:
    pb = PlaybackBuffer(0.0, prebuffer_s=0.0)
    pb.push(b"\x01" * 320, now=0.0)
    pb.add_mark("m1")
    assert pb.advance(0.0).marks == []  # slot 0 plays the first 160 bytes
    assert pb.advance(F).marks == []  # slot 1 plays the rest
    assert pb.advance(2 * F).marks == ["m1"]  # finished by 40 ms


def test_mark_with_nothing_buffered_completes_on_next_slot() -> None:
    pb = PlaybackBuffer(0.0)
    pb.advance(0.0)
    pb.add_mark("now")
    assert pb.advance(F).marks == ["now"]


def test_clear_drops_audio_and_returns_marks() -> None:
    pb = PlaybackBuffer(0.0, prebuffer_s=0.0)
    pb.push(b"\x01" * 1600, now=0.0)
    pb.add_mark("a")
    pb.push(b"\x01" * 1600, now=0.0)
    pb.add_mark("b")
    pb.advance(0.0)
    assert pb.clear() == ["a", "b"]
    assert pb.dropped_on_clear == 3200 - 160
    assert pb.buffered_bytes == 0 and not pb.audible
    assert all(s.filled == 0 for s in pb.advance(1.0).slots)
    assert pb.advance(2.0).marks == []


def test_short_starvation_is_a_gap_long_one_is_a_new_talkspurt() -> None:
    pb = PlaybackBuffer(0.0, prebuffer_s=0.0, gap_max_s=0.5)
    pb.push(b"\x01" * 160, now=0.0)
    pb.advance(0.0)  # plays it
    pb.advance(F)  # nothing left: starved at 20 ms
    assert pb.state is PlaybackState.STARVED
    pb.push(b"\x01" * 160, now=0.1)
    pb.advance(0.2)
    assert pb.gaps_s == [pytest.approx(0.08)]  # starved at 20 ms, resumed at 100 ms
    pb.advance(0.3)
    pb.push(b"\x01" * 160, now=2.0)  # long pause: the agent's next turn
    pb.advance(2.1)
    assert len(pb.gaps_s) == 1


def test_running_dry_on_a_mark_is_not_a_gap() -> None:
    pb = PlaybackBuffer(0.0, prebuffer_s=0.0)
    pb.push(b"\x01" * 160, now=0.0)
    pb.add_mark("sentence-1")
    pb.advance(F)
    pb.push(b"\x01" * 160, now=0.1)
    step = pb.advance(0.2)
    assert step.marks == []  # completed already at 20 ms
    assert pb.gaps_s == []


def test_catch_up_plays_every_due_slot() -> None:
    pb = PlaybackBuffer(0.0, prebuffer_s=0.0)
    pb.push(b"\x01" * 1600, now=0.0)
    step = pb.advance(0.199)  # a stalled loop: 10 slots due at once
    assert len(step.slots) == 10
    assert [s.at for s in step.slots] == pytest.approx([i * F for i in range(10)])


def test_overflow_is_bounded() -> None:
    pb = PlaybackBuffer(0.0, max_buffer_bytes=1000)
    pb.push(b"\x01" * 1500, now=0.0)
    assert pb.buffered_bytes == 1000 and pb.overflow_bytes == 500
