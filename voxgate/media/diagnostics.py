"""Diagnostic agents that run in the media core (no speech worker needed).

* ``EchoAgent`` plays the caller's audio back 200 ms later, byte for byte,
  like a carrier's echo test. It places a mark every second so the far end's
  mark echoes can be checked, and a DTMF key press clears pending audio so
  barge-in can be exercised from a keypad.
* ``PromptAgent`` plays a short tone sequence, waits until the caller has
  heard all of it (its final mark comes back), then hangs up.

Both only use the ``MediaChannel`` interface and cost a few microseconds per
frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from voxgate.media import g711
from voxgate.media.call import EndReason
from voxgate.media.channel import ChannelClosedError, InboundAudio, MarkReached, MediaChannel
from voxgate.media.dtmf import DtmfEvent
from voxgate.media.frame import FRAME_BYTES_ULAW, FRAME_MS, SAMPLE_RATE
from voxgate.media.outqueue import OutboundQueueFull

__all__ = ["EchoAgent", "PromptAgent", "tone_sequence"]


class EchoAgent:
    """Return caller audio after ``delay_ms`` (frame-counted, so no timers)."""

    def __init__(self, delay_ms: int = 200, mark_every_frames: int = 50) -> None:
        if delay_ms < 0 or delay_ms % FRAME_MS:
            raise ValueError("delay must be a non-negative multiple of 20 ms")
        self._delay_frames = delay_ms // FRAME_MS
        self._mark_every = mark_every_frames
        self.frames_echoed = 0
        self.marks_reached: list[str] = []
        self.marks_skipped = 0

    async def run(self, channel: MediaChannel) -> None:
        line: deque[bytes] = deque()
        delay = self._delay_frames
        try:
            async for event in channel.events():
                if isinstance(event, InboundAudio):
                    line.append(event.payload)
                    if len(line) > delay:
                        await channel.send(line.popleft())
                        self.frames_echoed += 1
                        if self._mark_every and self.frames_echoed % self._mark_every == 0:
                            self._place_mark(channel)
                elif isinstance(event, MarkReached):
                    if event.played:
                        self.marks_reached.append(event.name)
                elif isinstance(event, DtmfEvent):
                    line.clear()
                    channel.clear()
        except ChannelClosedError:
            return

    def _place_mark(self, channel: MediaChannel) -> None:
        try:
            channel.mark(f"echo-{self.frames_echoed}")
        except OutboundQueueFull:
            # The far end stopped echoing marks; keep echoing audio regardless.
            self.marks_skipped += 1


def tone_sequence(
    tones: Sequence[tuple[float, float]],
    *,
    gap: float = 0.15,
    level_dbfs: float = -12.0,
    sample_rate: int = SAMPLE_RATE,
) -> bytes:
    """µ-law audio of ``(frequency Hz, seconds)`` tones separated by ``gap``.

    Each tone ramps in and out over 5 ms so it starts and stops without a
    click; the result is padded with silence to whole 20 ms frames.
    """
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    ramp = int(0.005 * sample_rate)
    parts: list[np.ndarray] = []
    silence = np.zeros(int(gap * sample_rate))
    for freq, seconds in tones:
        n = int(seconds * sample_rate)
        tone = amplitude * np.sin(2 * np.pi * freq * np.arange(n) / sample_rate)
        envelope = np.ones(n)
        edge = min(ramp, n // 2)
        if edge:
            envelope[:edge] = np.linspace(0.0, 1.0, edge)
            envelope[n - edge :] = np.linspace(1.0, 0.0, edge)
        parts += [tone * envelope, silence]
    pcm = np.concatenate(parts) if parts else np.zeros(0)
    pad = (-len(pcm)) % FRAME_BYTES_ULAW
    pcm = np.concatenate((pcm, np.zeros(pad)))
    return g711.ulaw_encode(np.round(pcm).astype(np.int16))


class PromptAgent:
    """Play a tone prompt (three rising tones by default), then hang up."""

    END_MARK = "prompt-end"

    def __init__(
        self,
        tones: Sequence[tuple[float, float]] = ((440.0, 0.4), (660.0, 0.4), (880.0, 0.6)),
    ) -> None:
        self.audio = tone_sequence(tones)
        self.completed = False

    async def run(self, channel: MediaChannel) -> None:
        try:
            await channel.send(self.audio)
            channel.mark(self.END_MARK)
            async for event in channel.events():
                if isinstance(event, MarkReached) and event.name == self.END_MARK:
                    self.completed = event.played
                    await channel.hangup(EndReason.AGENT_HANGUP)
                    return
        except ChannelClosedError:
            return
