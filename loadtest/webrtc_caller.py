"""A browser-like WebRTC caller (aiortc): the console's Call button without a browser.

:class:`BrowserCaller` does what the console does: it posts a non-trickle
offer (Opus first, then PCMU and PCMA, as browsers offer; or the codecs you
choose) to ``POST /tenants/{t}/api/agents/{a}/webrtc``, plays µ-law fixture
audio as its microphone in real time (48 kHz frames, like a browser's
microphone), records what it hears with each 20 ms frame's arrival time, sends
key presses on a ``dtmf`` data channel, and hangs up with ``DELETE
calls/{id}`` or by closing its peer connection.

What it measures is what a browser would notice: when the agent's audio
starts after the caller stopped speaking (turn latency), the spacing of the
frames it receives (jitter), and whether the agent's audio stops when the
caller talks over it.

It imports ``voxgate.media`` for codecs and the loopback ICE candidate only;
never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from av import AudioFrame
from av.packet import Packet

from loadtest.audio import FRAME_BYTES, MULAW_SILENCE, SpeechDetector
from voxgate.media.g711 import ulaw_decode, ulaw_encode
from voxgate.media.resample import StreamResampler
from voxgate.media.webrtc_channel import mono_pcm
from voxgate.media.webrtc_peer import add_loopback_candidates, no_prefetch

__all__ = ["BrowserCaller", "Earpiece", "Microphone", "OfferRefused"]

_SILENT_FRAME = bytes([MULAW_SILENCE]) * FRAME_BYTES
_FRAME_S = 0.020


class OfferRefused(Exception):
    """The signalling route did not answer 201."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Microphone(MediaStreamTrack):
    """The caller's microphone: queued µ-law clips, else silence, every 20 ms.

    Frames go out at ``rate`` Hz (48 kHz, a browser's rate) on the track's own
    real-time grid. :meth:`play` returns a future that resolves with the
    monotonic time the clip's last frame was handed to the RTP sender.
    """

    kind = "audio"

    def __init__(self, rate: int = 48000) -> None:
        super().__init__()
        self.rate = rate
        # "pcmu": hand the RTP sender µ-law packets (no encoder, no thread), for
        # callers that offered PCMU only; "pcm": 48 kHz frames, as a browser does.
        self.mode = "pcm"
        self._samples = rate // 50
        self._queue: deque[bytes] = deque()
        self._ends: deque[tuple[int, asyncio.Future[float]]] = deque()
        self._queued = 0  # frames ever queued
        self._sent = 0  # frames ever sent from the queue
        self._resampler = StreamResampler(8000, rate, "QQ")
        self._pending = np.zeros(0, dtype=np.int16)
        self._next: float | None = None
        self._pts = 0
        self.late_frames = 0

    def play(self, ulaw: bytes) -> asyncio.Future[float]:
        """Queue a clip after what is queued; resolves when its last frame is sent."""
        for offset in range(0, len(ulaw), FRAME_BYTES):
            frame = ulaw[offset : offset + FRAME_BYTES]
            self._queue.append(frame.ljust(FRAME_BYTES, bytes([MULAW_SILENCE])))
        self._queued += (len(ulaw) + FRAME_BYTES - 1) // FRAME_BYTES
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._ends.append((self._queued, done))
        return done

    @property
    def talking(self) -> bool:
        return bool(self._queue)

    def silence(self) -> None:
        """Stop talking: drop what is queued (its futures resolve now)."""
        self._sent += len(self._queue)
        self._queue.clear()
        self._resolve(time.monotonic())

    def _resolve(self, now: float) -> None:
        while self._ends and self._ends[0][0] <= self._sent:
            _, done = self._ends.popleft()
            if not done.done():
                done.set_result(now)

    async def recv(self) -> AudioFrame | Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._next is None:
            self._next = now
        else:
            self._next += _FRAME_S
            delay = self._next - now
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.06:
                self.late_frames += 1
                self._next = now  # a stalled client: no burst to catch up
        ulaw = self._queue.popleft() if self._queue else _SILENT_FRAME
        if self.mode == "pcmu":
            packet = Packet(ulaw)
            packet.pts = self._pts
            packet.time_base = fractions.Fraction(1, 8000)
            self._pts += FRAME_BYTES
            self._count_sent(ulaw)
            return packet
        pcm = self._resampler.process(ulaw_decode(ulaw))
        if self._pending.size:
            pcm = np.concatenate((self._pending, pcm))
        if pcm.size < self._samples:  # the resampler's start-up delay
            pcm = np.concatenate((np.zeros(self._samples - pcm.size, dtype=np.int16), pcm))
        self._pending = pcm[self._samples :]
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[: self._samples]).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += self._samples
        self._count_sent(ulaw)
        return frame

    def _count_sent(self, ulaw: bytes) -> None:
        if ulaw is not _SILENT_FRAME:
            self._sent += 1
            self._resolve(time.monotonic())


class Earpiece:
    """What the caller hears: 8 kHz µ-law audio, and each received frame's arrival
    time and whether it was speech (RMS above ``silence_dbfs``)."""

    def __init__(self, silence_dbfs: float = -50.0) -> None:
        self.audio = bytearray()
        self.arrivals: list[float] = []
        self.loud: list[bool] = []
        self._detector = SpeechDetector(silence_dbfs)
        self._resampler: StreamResampler | None = None
        self._rate = 0
        self._pending = np.zeros(0, dtype=np.int16)

    async def run(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, AudioFrame):
                    self.add(mono_pcm(frame), frame.sample_rate, time.monotonic())

    def add(self, pcm: np.ndarray, rate: int, now: float) -> None:  # type: ignore[type-arg]
        """One received frame (mono int16 at ``rate``), arrived at ``now``."""
        # Loudness from the frame as received: the resampler's delay must not
        # move the time a sound is noticed.
        self.arrivals.append(now)
        self.loud.append(self._detector.is_speech(ulaw_encode(pcm[:: max(1, rate // 8000)])))
        if rate != self._rate or self._resampler is None:
            self._rate = rate
            self._resampler = StreamResampler(rate, 8000, "MQ")
        out = self._resampler.process(pcm)
        if self._pending.size:
            out = np.concatenate((self._pending, out))
        whole = out.size - out.size % FRAME_BYTES
        self._pending = out[whole:]
        self.audio += ulaw_encode(out[:whole])

    def first_sound_after(self, t: float) -> float | None:
        """Arrival time of the first speech frame that arrived after ``t``."""
        for at, loud in zip(self.arrivals, self.loud, strict=True):
            if at > t and loud:
                return at
        return None

    def last_sound(self) -> float | None:
        for at, loud in zip(reversed(self.arrivals), reversed(self.loud), strict=True):
            if loud:
                return at
        return None

    def quiet_since(self, now: float) -> float:
        """Seconds since the last speech frame (``inf`` if none yet)."""
        last = self.last_sound()
        return float("inf") if last is None else now - last

    def interarrival_jitter_ms(self, skip: int = 50) -> list[float]:
        """|gap - 20 ms| between consecutive frames, after the first ``skip``."""
        times = self.arrivals[skip:]
        return [abs((b - a) - _FRAME_S) * 1000 for a, b in itertools.pairwise(times)]


@dataclass
class BrowserCaller:
    """One browser call to an agent (module docstring)."""

    session: aiohttp.ClientSession
    base_url: str  # e.g. http://127.0.0.1:8080
    tenant_id: str
    agent_id: str
    api_key: str
    codecs: Sequence[str] = ("opus", "pcmu", "pcma")  # offer order
    loopback: bool = True  # add a 127.0.0.1 candidate (hosts with no other interface)
    # Drop aiortc's fixed 80 ms receive prefetch (measure at the packets, not after a
    # buffer a browser would size on its own, ~20-60 ms on a clean path).
    prompt_receive: bool = False
    mic: Microphone = field(default_factory=Microphone)
    ear: Earpiece = field(default_factory=Earpiece)
    call_id: str | None = None
    pc: RTCPeerConnection | None = None
    connected_at: float | None = None
    closed_at: float | None = None
    dtmf: RTCDataChannel | None = None
    dtmf_open: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def call(self, http_s: float = 15.0) -> str:
        """Offer, get the answer, apply it; returns the call id or raises OfferRefused."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        transceiver = pc.addTransceiver(self.mic, direction="sendrecv")
        wanted = [name.lower() for name in self.codecs]
        caps = RTCRtpSender.getCapabilities("audio").codecs
        preferred: list[RTCRtpCodecCapability] = [
            c for name in wanted for c in caps if c.mimeType.lower() == f"audio/{name}"
        ]
        transceiver.setCodecPreferences(preferred)
        if wanted == ["pcmu"]:
            self.mic.mode = "pcmu"  # offered PCMU only: that is what the sender uses
        if self.prompt_receive:
            no_prefetch(transceiver.receiver)
        self.dtmf = dtmf = pc.createDataChannel("dtmf", ordered=True)
        dtmf.on("open", self.dtmf_open.set)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        if self.loopback:
            await add_loopback_candidates(pc)
        await pc.setLocalDescription(await pc.createOffer())
        url = f"{self.base_url}/tenants/{self.tenant_id}/api/agents/{self.agent_id}/webrtc"
        body = {"type": "offer", "sdp": pc.localDescription.sdp}
        async with self.session.post(
            url, json=body, headers=self.headers, timeout=aiohttp.ClientTimeout(total=http_s)
        ) as response:
            data = await response.json(content_type=None)
            if response.status != 201:
                error = data.get("error", {}) if isinstance(data, dict) else {}
                await pc.close()
                raise OfferRefused(
                    response.status, str(error.get("code", "")), str(error.get("message", ""))
                )
        self.call_id = str(data["call_id"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
        return self.call_id

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.get_running_loop().create_task(self.ear.run(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_state(self) -> None:
        pc = self.pc
        if pc is None:
            return
        if pc.connectionState == "connected":
            self.connected_at = time.monotonic()
            self._connected.set()
        elif pc.connectionState in ("closed", "failed"):
            self.closed_at = self.closed_at or time.monotonic()
            self._closed.set()

    async def wait_connected(self, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            await self._connected.wait()

    async def wait_closed(self, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_quiet(self, quiet_s: float, within: float) -> bool:
        """Until the agent has been silent ``quiet_s`` after speaking; False if it was not
        within ``within`` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not self.closed:
            now = time.monotonic()
            if self.ear.last_sound() is not None and self.ear.quiet_since(now) >= quiet_s:
                return True
            await asyncio.sleep(0.05)
        return False

    async def wait_sound(self, after: float, within: float) -> float | None:
        """Until the agent's audio arrives after ``after`` (at most ``within`` seconds);
        its arrival time or None."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not self.closed:
            found = self.ear.first_sound_after(after)
            if found is not None:
                return found
            await asyncio.sleep(0.02)
        return self.ear.first_sound_after(after)

    def send_digits(self, digits: str) -> None:
        assert self.dtmf is not None, "call() first"
        self.dtmf.send(digits)

    async def hangup(self) -> int:
        """``DELETE calls/{id}``; the HTTP status."""
        url = f"{self.base_url}/tenants/{self.tenant_id}/api/calls/{self.call_id}"
        async with self.session.delete(url, headers=self.headers) as response:
            return response.status

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
