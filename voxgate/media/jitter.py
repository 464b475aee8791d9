"""Adaptive jitter buffer for 8 kHz, 20 ms RTP audio frames.

Sans-IO: :meth:`JitterBuffer.push` takes an arriving packet's fields and the
arrival time, :meth:`JitterBuffer.pop` is called once per 20 ms tick of the
media clock and says what to play for that tick. The buffer never touches
sockets or clocks, so tests drive it with a fake clock.

How it plays:

* Packets are ordered by extended (wrap-counted) sequence number; playout
  follows the sender's timestamps, so a pause in sending (silence
  suppression, a DTMF event) is played as silence, not as loss.
* The playout delay starts at ``initial_delay``. It grows when a packet
  arrives just after its slot was concealed: playout rewinds to that packet,
  so the concealment frames already played become the added delay (no audio
  is thrown away). It shrinks by dropping one frame when every packet of the
  last second waited at least one frame longer than the target delay, which
  follows the RFC 3550 interarrival jitter estimate within
  ``[min_delay, max_delay]``.
* A missing frame is concealed by repeating the last one, fading, for
  ``conceal_frames`` ticks, then silence.
* A new SSRC, a confirmed large sequence jump or a timestamp far from the
  playout position restarts the buffer (resync).
"""

from __future__ import annotations

import enum

import msgspec
import numpy as np

from voxgate.media import g711

__all__ = [
    "JitterBuffer",
    "JitterStats",
    "Playout",
    "PlayoutKind",
    "conceal_ulaw",
]

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
# RFC 3550 A.1: a jump larger than this is not reordering; confirm it with a
# second packet before restarting.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
# Fade of the repeated frame for each concealed tick.
_CONCEAL_GAINS = (0.7, 0.35, 0.15)


class PlayoutKind(enum.Enum):
    AUDIO = "audio"  # a received frame, as sent
    CONCEALED = "concealed"  # the last frame repeated at ``gain`` in place of a lost one
    SILENCE = "silence"  # nothing to play: not started, sender paused, or long loss


class Playout(msgspec.Struct, frozen=True):
    """What to play for one 20 ms tick."""

    kind: PlayoutKind
    payload: bytes = b""
    gain: float = 1.0
    payload_type: int | None = None


class JitterStats(msgspec.Struct, kw_only=True):
    packets_received: int = 0
    packets_played: int = 0
    late_packets: int = 0
    duplicate_packets: int = 0
    overflow_packets: int = 0
    lost_packets: int = 0  # sequence numbers skipped at playout (lost or too late)
    concealed_frames: int = 0  # faded repeats played
    underrun_frames: int = 0  # ticks where the next frame was missing
    silence_frames: int = 0
    dropped_frames: int = 0  # frames skipped to shrink the delay
    delay_increases: int = 0
    resyncs: int = 0
    jitter_ms: float = 0.0
    target_delay_ms: float = 0.0
    delay_ms: float = 0.0


_SILENCE = Playout(PlayoutKind.SILENCE)


class _Entry:
    __slots__ = ("arrival", "ext_ts", "payload", "payload_type")

    def __init__(self, ext_ts: int, payload: bytes, payload_type: int, arrival: float) -> None:
        self.ext_ts = ext_ts
        self.payload = payload
        self.payload_type = payload_type
        self.arrival = arrival


def _wrap_diff(a: int, b: int, modulus: int) -> int:
    d = (a - b) % modulus
    return d - modulus if d >= modulus // 2 else d


class JitterBuffer:
    """Reorders, delays and conceals one RTP audio stream for steady playout."""

    def __init__(
        self,
        *,
        min_delay: float = 0.04,
        max_delay: float = 0.3,
        initial_delay: float = 0.06,
        clock_rate: int = 8000,
        frame_samples: int = 160,
        conceal_frames: int = 2,
        max_packets: int = 128,
        window_frames: int = 50,
    ) -> None:
        if not 0 <= min_delay <= initial_delay <= max_delay:
            raise ValueError("need 0 <= min_delay <= initial_delay <= max_delay")
        if not 0 <= conceal_frames <= len(_CONCEAL_GAINS):
            raise ValueError(f"conceal_frames must be 0..{len(_CONCEAL_GAINS)}")
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.initial_delay = initial_delay
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.frame_duration = frame_samples / clock_rate
        self.conceal_frames = conceal_frames
        self.max_packets = max_packets
        self.window_frames = window_frames
        self._stats = JitterStats()
        self._jitter = 0.0  # RFC 3550 estimate, timestamp units
        self._reset()

    # -- state -------------------------------------------------------------

    def _reset(self) -> None:
        self._ssrc: int | None = None
        self._packets: dict[int, _Entry] = {}
        self._highest_seq: int | None = None  # extended
        self._last_ext_ts: int | None = None
        self._probe_seq: int | None = None
        self._ts_probe_seq: int | None = None
        self._prev_transit: float | None = None
        self._first_arrival: float | None = None
        self._started = False
        self._playout_ts = 0  # extended timestamp of the next slot
        self._last_played_seq: int | None = None
        self._last_payload: bytes | None = None
        self._last_pt: int | None = None
        self._conceal_run = 0
        self._conceal_start_ts = 0
        self._window_min = float("inf")
        self._window_count = 0
        self._delay = self.initial_delay  # smoothed wait of played packets, seconds

    def _resync(self, ssrc: int) -> None:
        self._stats.resyncs += 1
        self._reset()
        self._ssrc = ssrc

    @property
    def target_delay(self) -> float:
        """Delay the buffer aims for, in seconds: about three times the
        jitter estimate (covers most of a uniform jitter spread), bounded."""
        wanted = 3.0 * self._jitter / self.clock_rate
        return min(self.max_delay, max(self.min_delay, wanted))

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self._jitter / self.clock_rate

    def stats(self) -> JitterStats:
        s = msgspec.structs.replace(self._stats)
        s.jitter_ms = round(self.jitter_ms, 3)
        s.target_delay_ms = round(1000.0 * self.target_delay, 3)
        s.delay_ms = round(1000.0 * self._delay, 3)
        return s

    def __len__(self) -> int:
        return len(self._packets)

    # -- input -------------------------------------------------------------

    def push(
        self,
        *,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        now: float,
        payload_type: int = 0,
    ) -> None:
        """Add an arriving audio packet."""
        self._stats.packets_received += 1
        if self._ssrc is None:
            self._ssrc = ssrc
        elif ssrc != self._ssrc:
            self._resync(ssrc)

        if self._highest_seq is not None:
            delta = _wrap_diff(sequence_number, self._highest_seq % SEQ_MOD, SEQ_MOD)
            if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
                # Either a stray old packet or the sender restarted its
                # numbering; two consecutive packets confirm a restart.
                if self._probe_seq is not None and sequence_number == (
                    (self._probe_seq + 1) % SEQ_MOD
                ):
                    self._resync(ssrc)
                else:
                    self._probe_seq = sequence_number
                    self._stats.late_packets += 1
                    return
        self._probe_seq = None

        ext_seq, ext_ts = self._unwrap(sequence_number, timestamp)

        if self._started:
            lead = ext_ts - self._playout_ts
            ahead_limit = (self.max_delay + 1.0) * self.clock_rate
            if lead > ahead_limit or lead < -self.clock_rate:
                # The timestamp jumped (sender restart, SBC re-anchoring), or
                # this is a stray packet; the next packet in sequence confirms
                # a jump, and then we start over from it.
                if self._ts_probe_seq is not None and sequence_number == (
                    (self._ts_probe_seq + 1) % SEQ_MOD
                ):
                    self._resync(ssrc)
                    ext_seq, ext_ts = self._unwrap(sequence_number, timestamp)
                else:
                    self._ts_probe_seq = sequence_number
                    self._stats.late_packets += 1
                    return
        self._ts_probe_seq = None

        self._update_jitter(ext_ts, now)

        if ext_seq in self._packets:
            self._stats.duplicate_packets += 1
            return
        if self._last_played_seq is not None and ext_seq <= self._last_played_seq:
            self._stats.late_packets += 1
            return
        if (
            self._started
            and ext_ts + self.frame_samples <= self._playout_ts
            and not self._recover_late(ext_seq, ext_ts)
        ):
            if self._conceal_run > 0 and ext_seq == (self._last_played_seq or 0) + 1:
                # We are starving and the very next packet is too late to
                # wait for: the sender's clock moved backwards or stalled.
                # Start over from it instead of dropping everything after.
                self._resync(ssrc)
                ext_seq, ext_ts = self._unwrap(sequence_number, timestamp)
            else:
                self._stats.late_packets += 1
                return
        if len(self._packets) >= self.max_packets:
            self._stats.overflow_packets += 1
            return
        if self._first_arrival is None:
            self._first_arrival = now
        self._packets[ext_seq] = _Entry(ext_ts, payload, payload_type, now)

    def _unwrap(self, seq: int, ts: int) -> tuple[int, int]:
        if self._highest_seq is None:
            ext_seq = SEQ_MOD + seq
            self._highest_seq = ext_seq
        else:
            ext_seq = self._highest_seq + _wrap_diff(seq, self._highest_seq % SEQ_MOD, SEQ_MOD)
            self._highest_seq = max(self._highest_seq, ext_seq)
        if self._last_ext_ts is None:
            ext_ts = TS_MOD + ts
            self._last_ext_ts = ext_ts
        else:
            ext_ts = self._last_ext_ts + _wrap_diff(ts, self._last_ext_ts % TS_MOD, TS_MOD)
            self._last_ext_ts = max(self._last_ext_ts, ext_ts)
        return ext_seq, ext_ts

    def _update_jitter(self, ext_ts: int, now: float) -> None:
        # RFC 3550 §6.4.1 / A.8: J += (|D| - J) / 16, D from relative transit times.
        transit = now * self.clock_rate - ext_ts
        if self._prev_transit is not None:
            d = abs(transit - self._prev_transit)
            # A sender pause with a timestamp that does not follow the clock
            # would look like a huge transit jump; it is not jitter.
            if d < self.clock_rate:
                self._jitter += (d - self._jitter) / 16.0
        self._prev_transit = transit

    def _recover_late(self, ext_seq: int, ext_ts: int) -> bool:
        """A packet arrived after its slot. If it is the next one we needed
        and we have only concealed since, rewind playout to it: the
        concealment already played becomes extra delay, nothing is lost."""
        if (
            self._conceal_run == 0
            or self._last_played_seq is None
            or ext_seq != self._last_played_seq + 1
            or ext_ts < self._conceal_start_ts
        ):
            return False
        added = (self._playout_ts - ext_ts) / self.clock_rate
        if self._delay + added > self.max_delay:
            return False
        self._playout_ts = ext_ts
        self._delay += added
        self._stats.delay_increases += 1
        return True

    # -- output ------------------------------------------------------------

    def pop(self, now: float) -> Playout:
        """What to play for the tick at ``now``; call once per 20 ms."""
        if not self._started:
            if (
                self._first_arrival is None
                or not self._packets
                or now - self._first_arrival < self.initial_delay
            ):
                self._stats.silence_frames += 1
                return _SILENCE
            head_seq = min(self._packets)
            self._started = True
            self._playout_ts = self._packets[head_seq].ext_ts
            self._last_played_seq = head_seq - 1

        # Discard anything whose slot has fully passed.  A plain loop, not a
        # comprehension: this runs for every call every 20 ms and usually
        # finds nothing, so the comprehension's setup would be the whole cost.
        packets = self._packets
        horizon = self._playout_ts - self.frame_samples
        stale: list[int] | None = None
        for s, e in packets.items():
            if e.ext_ts <= horizon:
                if stale is None:
                    stale = []
                stale.append(s)
        if stale is not None:
            for s in stale:
                del packets[s]
            self._stats.late_packets += len(stale)

        entry, seq = self._head()
        if entry is not None and self._should_shrink():
            # Skip this frame: it shortens the delay by one frame.
            del self._packets[seq]
            self._stats.dropped_frames += 1
            self._delay = max(0.0, self._delay - self.frame_duration)
            self._last_played_seq = seq
            self._playout_ts = entry.ext_ts + self.frame_samples
            self._window_min = float("inf")
            self._window_count = 0
            entry, seq = self._head()

        if entry is not None and entry.ext_ts < self._playout_ts + self.frame_samples:
            del self._packets[seq]
            # Re-align to the sender's grid in case its timestamps are not a
            # whole number of frames from ours (after a pause).
            self._playout_ts = entry.ext_ts + self.frame_samples
            if self._last_played_seq is not None and seq > self._last_played_seq + 1:
                self._stats.lost_packets += seq - self._last_played_seq - 1
            self._last_played_seq = seq
            self._last_payload = entry.payload
            self._last_pt = entry.payload_type
            self._conceal_run = 0
            wait = now - entry.arrival
            self._window_min = min(self._window_min, wait)
            self._window_count += 1
            self._delay += (wait - self._delay) / 16.0
            self._stats.packets_played += 1
            return Playout(PlayoutKind.AUDIO, entry.payload, 1.0, entry.payload_type)

        slot_ts = self._playout_ts
        self._playout_ts += self.frame_samples
        if (
            entry is not None
            and self._last_played_seq is not None
            and seq == self._last_played_seq + 1
        ):
            # Next packet is here but later in time: the sender paused.
            self._conceal_run = 0
            self._stats.silence_frames += 1
            return _SILENCE
        # A frame is missing (lost, late, or the stream stopped).
        if self._conceal_run == 0:
            self._conceal_start_ts = slot_ts
        self._conceal_run += 1
        self._stats.underrun_frames += 1
        if self._conceal_run <= self.conceal_frames and self._last_payload is not None:
            self._stats.concealed_frames += 1
            return Playout(
                PlayoutKind.CONCEALED,
                self._last_payload,
                _CONCEAL_GAINS[self._conceal_run - 1],
                self._last_pt,
            )
        self._stats.silence_frames += 1
        return _SILENCE

    def _head(self) -> tuple[_Entry | None, int]:
        if not self._packets:
            return None, 0
        seq = min(self._packets)
        return self._packets[seq], seq

    def _should_shrink(self) -> bool:
        if self._window_count < self.window_frames:
            return False
        # Hysteresis: after dropping a frame every packet of the window must
        # still have waited a frame longer than the target.
        if self._window_min - 2 * self.frame_duration < self.target_delay:
            # Not enough spare wait; start a new observation window.
            self._window_min = float("inf")
            self._window_count = 0
            return False
        # Only drop when the next frame is already here, so no gap follows.
        return len(self._packets) >= 2


def conceal_ulaw(payload: bytes, gain: float) -> bytes:
    """The µ-law frame ``payload`` attenuated by ``gain`` (for concealment)."""
    pcm = g711.ulaw_decode(payload).astype(np.float32) * gain
    return g711.ulaw_encode(pcm.astype(np.int16))
