"""One call's speech pipeline inside a worker.

Caller audio (8 kHz µ-law ``AudioIn``) is decoded, resampled to 16 kHz and scored
by VAD; the endpointer cuts turns; Whisper transcribes them (partials while the
caller speaks, a final at the endpoint); the flow engine decides; Piper speaks,
sentence by sentence, as ``AudioOut`` chunks each ending in a mark. Static
prompts come pre-rendered from the prompt cache.

Latency: the final transcription is started speculatively when the caller has
paused ``SPECULATIVE_MS`` (a :class:`SpeechPause`), on exactly the audio the
endpoint will carry; when the endpoint confirms the pause ``min_silence_ms`` later,
the transcript is ready or nearly so and is reused instead of decoding again. If
the caller speaks on, the speculative result is dropped. Partial hypotheses pause
while the caller is silent so they never compete with that decode for the CPU.
When the speculative transcript reads as a finished sentence (Whisper punctuates
it: ends in ``.``, ``?`` or ``!``), the turn ends after ``EARLY_SILENCE_MS`` of
silence instead of ``min_silence_ms``; otherwise (trailing comma, no punctuation,
a number being read out) the endpointer waits the full ``min_silence_ms``, which
stays the bounded worst case.

Everything heavy runs in thread pools (:class:`PipelineResources`) so the worker's
event loop keeps reading frames: VAD in a small real-time pool that inference can
never starve, STT/TTS in the inference pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from voxgate.agents import ipc
from voxgate.agents.endpointing import (
    BargeIn,
    Endpointer,
    EndpointerConfig,
    SpeechEnd,
    SpeechPause,
    SpeechStart,
    State,
)
from voxgate.agents.endpointing import Event as EndpointEvent
from voxgate.agents.flow_engine import (
    Action,
    CallLlm,
    CallWebhook,
    ExternalResult,
    FlowEngine,
    Hangup,
    IntentMatched,
    QueryKnowledge,
    Say,
    Transfer,
)
from voxgate.agents.flowspec import FlowSpec
from voxgate.agents.inference import Priority, has_idle_thread, run_at, try_run
from voxgate.agents.prompt_cache import PromptCache
from voxgate.agents.side_work import CallSideWork, SideWorkHttp
from voxgate.agents.stt import SpeechRecognizer, Transcription
from voxgate.agents.tts import FRAME_BYTES, SpeechSynthesizer, split_sentences
from voxgate.agents.vad import VadPool, VadStream
from voxgate.media.g711 import ulaw_decode
from voxgate.media.resample import StreamResampler

log = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[ipc.Frame], Awaitable[None]]

CHUNK_FRAMES = 25
"""AudioOut chunks carry at most 0.5 s, so an Interrupt leaves little queued audio."""
AUDIO_QUEUE = 250
"""Caller audio frames buffered per call (5 s) before new ones are dropped."""
FIRST_PIECE_CHARS = 30
# Caller utterances that may wait for their final transcript at once.
MAX_PENDING_UTTERANCES = 8
"""Live replies: a longer first sentence is split at its first clause break, because
Piper renders a piece at ~6 ms per character and the caller waits for the first."""
UPSAMPLE_QUALITY = "QQ"
"""soxr quality of the caller's 8 -> 16 kHz path. "HQ" holds back ~89 ms of audio in its
filter (every VAD decision, endpoint and barge-in came that much late); "QQ" holds back
well under 1 ms. Phone audio has nothing above 4 kHz to protect: every fixture
transcribes exactly and VAD's speech bounds stay within a window."""
EARLY_SILENCE_MS = 320
"""Silence that ends a turn whose speculative transcript is a finished sentence. Above
the longest pause inside a turn in the fixtures (256 ms, after "Yes,"), where Whisper
writes "Yes." too: punctuation alone cannot tell that pause from an ending."""
SPECULATIVE_MS = 128
"""Pause after which the final decode starts speculatively; also the silence kept after
the speech (``trailing_keep_ms``), so the audio is exactly the final one (128 ms of it
transcribes every fixture as well as 200 ms). Early enough that a beam-5 decode
(~150-250 ms) is usually done by ``EARLY_SILENCE_MS``. Pauses inside a turn reach
128 ms about once per two fixture turns; each wastes one decode, none is wrong."""


class PipelineError(Exception):
    """A call could not be set up (bad flow, bad settings)."""


@dataclass
class PipelineResources:
    """Models and thread pools shared by every call of a worker."""

    stt: SpeechRecognizer
    tts: SpeechSynthesizer
    vad_pool: VadPool
    inference: Executor
    """Usually an :class:`~voxgate.agents.inference.InferenceScheduler` (priorities)."""
    realtime: ThreadPoolExecutor
    prompt_caches: dict[str, PromptCache] = field(default_factory=dict)
    side_work: SideWorkHttp = field(default_factory=SideWorkHttp)
    """The worker's HTTP session for LLM/webhook nodes, and its webhook address policy."""

    def prompt_cache(self, directory: str | None) -> PromptCache | None:
        if directory is None:
            return None
        cache = self.prompt_caches.get(directory)
        if cache is None:
            cache = PromptCache(Path(directory), self.tts.settings_key)
            self.prompt_caches[directory] = cache
        return cache

    def close(self) -> None:
        self.inference.shutdown(wait=False, cancel_futures=True)
        self.realtime.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Speculation:
    key: tuple[float, float, int]
    result: asyncio.Future[Transcription]


@dataclass
class _TurnTiming:
    index: int
    text: str
    start: float
    end: float
    endpointing_s: float
    detected_wall: float
    stt_s: float = 0.0
    stt_wait_s: float = 0.0
    """STT time left after the endpoint (less than ``stt_s`` when speculation ran)."""
    speculative: bool = False
    nlp_s: float = 0.0
    tts_first_s: float | None = None
    first_audio_wall: float | None = None
    intent: str | None = None
    agent_text: list[str] = field(default_factory=list)
    heard_text: list[str] = field(default_factory=list)


class CallPipeline:
    """Drives one call; feed it frames from the worker loop, ``run()`` it as a task."""

    def __init__(
        self,
        start: ipc.StartCall,
        resources: PipelineResources,
        send: Send,
        *,
        flow: FlowSpec,
        clock: Callable[[], float] = time.monotonic,
        speculative_ms: int = SPECULATIVE_MS,
        early_silence_ms: int = EARLY_SILENCE_MS,
    ) -> None:
        self.call_id = start.call_id
        self.settings = start.settings
        self._res = resources
        self._send = send
        self._clock = clock
        self._engine = FlowEngine(
            flow,
            variables=dict(start.settings.variables),
            no_input_timeout=start.settings.no_input_timeout,
        )
        self._hints = self._engine.vocabulary_hints()
        self._cache = resources.prompt_cache(start.settings.prompt_cache_dir)
        self._vad = resources.vad_pool.acquire()
        self._vad_stream = VadStream(self._vad)
        self._upsample = StreamResampler(8000, 16000, quality=UPSAMPLE_QUALITY)
        self._endpointer = Endpointer(
            EndpointerConfig(
                min_silence_ms=start.settings.min_silence_ms,
                max_utterance_ms=int(start.settings.max_utterance_s * 1000),
                speculative_ms=speculative_ms,
                trailing_keep_ms=speculative_ms or EndpointerConfig().trailing_keep_ms,
                early_silence_ms=min(early_silence_ms, start.settings.min_silence_ms),
            )
        )
        self._early_key: tuple[float, float, int] | None = None
        self.early_ends = 0
        self._speculation: _Speculation | None = None
        self.speculative_hits = 0
        self.speculative_misses = 0
        self._audio: deque[bytes] = deque()
        self._audio_ready = asyncio.Event()
        self._audio_idle = asyncio.Event()
        self._audio_idle.set()
        self.audio_dropped = 0
        self._says: deque[Say] = deque()
        self._say_ready = asyncio.Event()
        self._speaking = False  # a Say is being rendered/sent
        self._barge_allowed = True
        self._pending_marks: dict[str, str] = {}  # mark -> text piece
        self._mark_seq = 0
        self._out_seq = 0
        self._wake = asyncio.Event()
        # One entry per caller utterance awaiting its final transcript.
        self._finals: asyncio.Queue[SpeechEnd] = asyncio.Queue(MAX_PENDING_UTTERANCES)
        self._partial_running = False
        self._last_partial_at = 0.0
        self._turns = 0
        self._turn: _TurnTiming | None = None
        self._ending: str | None = None
        self._after_audio: ipc.Frame | None = None  # Hangup/Transfer once audio is sent
        self._loops: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[None]] = set()
        self._speaker_task: asyncio.Task[None] | None = None
        self.turn_records: list[ipc.Turn] = []
        self._side_work = CallSideWork(
            resources.side_work,
            start.secrets,
            call_id=start.call_id,
            speak=lambda say: self._apply([say]),
            deliver=self._side_result,
        )

    # --- inputs from the worker loop --------------------------------------------------

    def feed_audio(self, frame: ipc.AudioIn) -> None:
        if len(self._audio) >= AUDIO_QUEUE:
            self.audio_dropped += 1
            return
        self._audio.append(frame.ulaw)
        self._audio_idle.clear()
        self._audio_ready.set()

    def on_mark(self, name: str) -> None:
        piece = self._pending_marks.pop(name, None)
        if piece is None:
            return
        if self._turn is not None:
            self._turn.heard_text.append(piece)
        self._spawn(
            self._send(
                ipc.Transcript(
                    call_id=self.call_id, text=piece, final=True, start=0.0, end=0.0, role="agent"
                )
            )
        )
        self._check_prompt_played()

    def on_dtmf(self, digit: str) -> None:
        self._apply(self._engine.on_dtmf(digit, self._clock()))

    def on_transfer_result(self, ok: bool, reason: str) -> None:
        """The core's answer to our ``Transfer``.

        A failed transfer follows the flow's ``failed`` port when it has one;
        otherwise the caller hears an apology and the call ends.
        """
        if ok:
            return
        log.info("call %s: transfer failed (%s)", self.call_id, reason)
        flow_fallback = self._engine.on_transfer_failed(self._clock())
        if flow_fallback:
            self._apply(flow_fallback)
            return
        text = self.settings.transfer_failed_text
        node = "transfer_failed"
        actions: list[Action] = [Say(text, False, False, node)] if text else []
        actions.append(Hangup("transfer_failed", node))
        self._apply(actions)

    def end(self, reason: str) -> None:
        if self._ending is None:
            self._ending = reason
        self._wake.set()

    @property
    def speculation(self) -> asyncio.Future[Transcription] | None:
        """The speculative final decode of the current pause, if one is running or ready."""
        return None if self._speculation is None else self._speculation.result

    @property
    def agent_audio_pending(self) -> bool:
        return self._speaking or bool(self._says) or bool(self._pending_marks)

    # --- main task ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._audio_loop(), name=f"audio-{self.call_id}"),
            loop.create_task(self._final_loop(), name=f"stt-{self.call_id}"),
        ]
        self._speaker_task = loop.create_task(self._speaker_loop(), name=f"tts-{self.call_id}")
        try:
            # The agent speaks first, without waiting for the caller.
            self._apply(self._engine.start(self._clock()))
            while self._ending is None:
                timeout = None
                deadline = self._engine.next_timeout()
                if deadline is not None:
                    timeout = max(0.0, deadline - self._clock())
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                deadline = self._engine.next_timeout()
                if deadline is not None and self._clock() >= deadline:
                    self._apply(self._engine.on_timer(self._clock()))
                self._raise_if_failed()
        finally:
            await self._shutdown()

    def _raise_if_failed(self) -> None:
        for task in (*self._loops, self._speaker_task):
            if task is not None and task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    raise exc

    async def _shutdown(self) -> None:
        await self._side_work.close()
        self._close_turn()
        if self._speculation is not None:
            self._speculation.result.cancel()
        loops = [*self._loops, *([self._speaker_task] if self._speaker_task else [])]
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Let queued sends (turn records, transcripts) go out; never wait long.
        if self._spawned:
            await asyncio.wait(self._spawned, timeout=1.0)
        for task in self._spawned:
            task.cancel()
        self._res.vad_pool.release(self._vad)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def wrapped() -> None:
            with contextlib.suppress(ipc.ChannelClosed):
                await coro

        task = asyncio.get_running_loop().create_task(wrapped())
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _in_pool(self, pool: Executor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    # --- caller audio -> events ----------------------------------------------------------

    async def _audio_loop(self) -> None:
        while True:
            await self._audio_ready.wait()
            self._audio_ready.clear()
            if not self._audio and self._early_key is None:
                self._audio_idle.set()
                continue
            chunk = b"".join(self._audio)
            self._audio.clear()
            events, partial = await self._in_pool(
                self._res.realtime, functools.partial(self._process_audio, chunk)
            )
            for event in events:
                await self._on_endpoint_event(event)
            if partial is not None:
                self._partial_running = True
                self._spawn(self._partial(partial, self._endpointer.now))
            if not self._audio:
                self._audio_idle.set()

    async def audio_processed(self) -> None:
        """Wait until every caller frame fed so far has been through VAD/endpointing."""
        await self._audio_idle.wait()

    def _process_audio(
        self, ulaw: bytes
    ) -> tuple[list[EndpointEvent], npt.NDArray[np.int16] | None]:
        events: list[EndpointEvent] = []
        early, self._early_key = self._early_key, None
        if early is not None:
            # Applied here, in the same thread as process(), never concurrently with it.
            ended = self._endpointer.allow_early_end(early)
            if ended is not None:
                events.append(ended)
        pcm16k = self._upsample.process(ulaw_decode(ulaw))
        for window, prob in self._vad_stream.feed(pcm16k):
            events += self._endpointer.process(window, prob)
        partial = None
        interval = self._res.stt.config.partial_interval_s
        if (
            interval > 0
            # Not in a pause: the speculative final decode needs the CPU more.
            and self._endpointer.state is State.SPEECH
            and not self._partial_running
            # Partials only feed captions: never queue one behind a final or a reply.
            and has_idle_thread(self._res.inference)
            and self._endpointer.now - self._last_partial_at >= interval
        ):
            audio = self._endpointer.utterance_audio()
            if len(audio) >= self._res.stt.config.partial_min_audio_s * 16000:
                self._last_partial_at = self._endpointer.now
                partial = audio
        return events, partial

    async def _on_endpoint_event(self, event: EndpointEvent) -> None:
        if isinstance(event, SpeechStart):
            if self._listening():
                self._engine.on_caller_speaking(self._clock())
            await self._send(ipc.SpeechStarted(call_id=self.call_id, at=event.onset))
        elif isinstance(event, BargeIn):
            if self.settings.barge_in and self._barge_allowed and self.agent_audio_pending:
                await self._interrupt()
        elif isinstance(event, SpeechPause):
            if self._listening():
                self._speculate(event)
        elif isinstance(event, SpeechEnd):
            if event.reason == "early":
                self.early_ends += 1
            await self._send(ipc.SpeechEnded(call_id=self.call_id, at=event.end))
            if not self._listening():
                self._engine.on_caller_silent(self._clock())
                return
            if self._finals.full():
                # Recognition is this far behind: the oldest utterance is stale by now.
                self._finals.get_nowait()
                log.warning("call %s: dropped an utterance awaiting recognition", self.call_id)
            self._finals.put_nowait(event)

    def _listening(self) -> bool:
        # While the agent talks with barge-in off, the caller is not being listened to.
        return not (
            self.agent_audio_pending and not (self.settings.barge_in and self._barge_allowed)
        )

    def _transcribe_final(self, audio: npt.NDArray[np.int16]) -> Transcription:
        # See SttConfig.final_hints: the flow's words as hotwords cost accuracy here.
        hints = self._hints if self._res.stt.config.final_hints else ()
        return self._res.stt.transcribe(
            audio, hints=hints, beam_size=self.settings.stt_beam_size or None
        )

    def _speculate(self, pause: SpeechPause) -> None:
        self._drop_speculation()
        future = asyncio.get_running_loop().run_in_executor(
            self._res.inference, functools.partial(self._transcribe_final, pause.audio)
        )
        # A dropped speculation's error (if any) must not surface as "never retrieved".
        future.add_done_callback(_consume)
        future.add_done_callback(functools.partial(self._speculation_done, pause.key))
        self._speculation = _Speculation(key=pause.key, result=future)

    def _speculation_done(
        self, key: tuple[float, float, int], future: asyncio.Future[Transcription]
    ) -> None:
        spec = self._speculation
        if spec is None or spec.key != key or future.cancelled() or future.exception():
            return
        if sounds_finished(future.result().text):
            self._early_key = key
            self._audio_ready.set()  # the pause may be long enough already

    def _drop_speculation(self) -> None:
        spec, self._speculation = self._speculation, None
        if spec is not None:
            # Not started yet: it never runs. Already running: its result is ignored.
            spec.result.cancel()
            self.speculative_misses += 1

    async def _partial(self, audio: npt.NDArray[np.int16], at: float) -> None:
        try:
            job = try_run(
                self._res.inference,
                Priority.PARTIAL,
                lambda: self._res.stt.transcribe_partial(audio),
            )
            if job is None:
                return  # the scheduler got busy meanwhile: a late partial is useless
            result = await job
        finally:
            self._partial_running = False
        if result.text and self._endpointer.in_speech:
            await self._send(
                ipc.Transcript(
                    call_id=self.call_id, text=result.text, final=False, start=at, end=at
                )
            )

    async def _final_loop(self) -> None:
        while True:
            event = await self._finals.get()
            detected = self._clock()
            spec = self._speculation
            if spec is not None and spec.key == event.key:
                self._speculation = None
                self.speculative_hits += 1
                result = await spec.result
            else:
                self._drop_speculation()
                result = await self._in_pool(
                    self._res.inference, functools.partial(self._transcribe_final, event.audio)
                )
            stt_wait = self._clock() - detected
            if not result.text:
                self._engine.on_caller_silent(self._clock())
                self._wake.set()  # the no-input deadline may have moved
                continue
            await self._send(
                ipc.Transcript(
                    call_id=self.call_id,
                    text=result.text,
                    final=True,
                    start=event.start,
                    end=event.end,
                )
            )
            self._close_turn()
            self._turn = _TurnTiming(
                index=self._turns,
                text=result.text,
                start=event.start,
                end=event.end,
                endpointing_s=event.at - event.end,
                detected_wall=detected,
                stt_s=result.compute_s,
                stt_wait_s=stt_wait,
                speculative=spec is not None and spec.key == event.key,
            )
            self._turns += 1
            started = time.perf_counter()
            actions = self._engine.on_utterance(result.text, self._clock())
            self._turn.nlp_s = time.perf_counter() - started
            self._apply(actions)

    # --- flow actions -----------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Say):
                self._says.append(action)
                if self._turn is not None:
                    self._turn.agent_text.append(action.text)
                self._say_ready.set()
            elif isinstance(action, IntentMatched):
                if self._turn is not None:
                    self._turn.intent = action.intent
            elif isinstance(action, Hangup):
                self._finish_after_audio(ipc.Hangup(call_id=self.call_id, reason=action.reason))
            elif isinstance(action, Transfer):
                self._finish_after_audio(ipc.Transfer(call_id=self.call_id, target=action.target))
            elif isinstance(action, CallLlm | CallWebhook | QueryKnowledge):
                self._side_work.start(action)
        self._wake.set()

    def _side_result(self, request_id: str, result: ExternalResult) -> None:
        self._apply(self._engine.on_result(request_id, result, self._clock()))

    def _finish_after_audio(self, frame: ipc.Frame) -> None:
        self._after_audio = frame
        self._say_ready.set()

    async def _speaker_loop(self) -> None:
        while True:
            await self._say_ready.wait()
            self._say_ready.clear()
            while self._says:
                say = self._says.popleft()
                self._speaking = True
                self._barge_allowed = say.barge_in
                self._endpointer.agent_speaking = True
                try:
                    await self._speak(say)
                finally:
                    self._speaking = False
            if self._after_audio is not None:
                frame, self._after_audio = self._after_audio, None
                await self._send(frame)
            self._check_prompt_played()

    async def _speak(self, say: Say) -> None:
        started = time.perf_counter()
        cached = self._cache.get(say.text) if self._cache is not None and say.static else None
        if cached is not None:
            mark = self._next_mark(say.text)
            await self._send(
                ipc.AgentSay(call_id=self.call_id, text=say.text, node=say.node_id, mark=mark)
            )
            await self._send_audio(cached, mark, started)
            return
        await self._send(ipc.AgentSay(call_id=self.call_id, text=say.text, node=say.node_id))
        stream = self._res.tts.stream()
        pieces = split_sentences(
            say.text, self._res.tts.config.max_piece_chars, first_max_chars=FIRST_PIECE_CHARS
        )
        rendered: list[bytes] = []
        for i, piece in enumerate(pieces):
            data = await run_at(
                self._res.inference, Priority.SPEECH, functools.partial(stream.piece, piece)
            )
            if i == len(pieces) - 1:
                data += stream.finish()
            rendered.append(data)
            if data:
                await self._send_audio(data, self._next_mark(piece), started)
        if say.static and self._cache is not None and rendered:
            audio = b"".join(rendered)
            cache = self._cache
            self._spawn(
                run_at(self._res.inference, Priority.PARTIAL, lambda: _put(cache, say.text, audio))
            )

    def _next_mark(self, text: str) -> str:
        self._mark_seq += 1
        name = f"{self.call_id}:{self._mark_seq}"
        self._pending_marks[name] = text
        return name

    async def _send_audio(self, ulaw: bytes, mark: str, started: float) -> None:
        step = CHUNK_FRAMES * FRAME_BYTES
        for offset in range(0, len(ulaw), step):
            last = offset + step >= len(ulaw)
            self._out_seq += 1
            await self._send(
                ipc.AudioOut(
                    call_id=self.call_id,
                    seq=self._out_seq,
                    ulaw=ulaw[offset : offset + step],
                    mark=mark if last else None,
                )
            )
            turn = self._turn
            if turn is not None and turn.first_audio_wall is None:
                turn.first_audio_wall = self._clock()
                turn.tts_first_s = time.perf_counter() - started
                await self._emit_turn_latency(turn)

    async def _interrupt(self) -> None:
        # First: an interrupted LLM answer ends its node, and what follows is cleared too.
        self._side_work.interrupt()
        self._says.clear()
        if self._speaker_task is not None:
            self._speaker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._speaker_task
        self._speaking = False
        self._pending_marks.clear()
        await self._send(ipc.Interrupt(call_id=self.call_id))
        await self._send(ipc.Metric(name="barge_in", value=1.0, labels={"call": self.call_id}))
        self._speaker_task = asyncio.get_running_loop().create_task(self._speaker_loop())
        if self._after_audio is not None:
            self._say_ready.set()
        self._check_prompt_played()

    def _check_prompt_played(self) -> None:
        if self.agent_audio_pending:
            return
        self._endpointer.agent_speaking = False
        self._apply(self._engine.on_prompt_played(self._clock()))

    # --- turn records -------------------------------------------------------------------

    async def _emit_turn_latency(self, turn: _TurnTiming) -> None:
        assert turn.first_audio_wall is not None  # set by the caller just before
        e2e = turn.endpointing_s + (turn.first_audio_wall - turn.detected_wall)
        stages = {
            "endpointing": turn.endpointing_s,
            "stt": turn.stt_s,
            "stt_wait": turn.stt_wait_s,
            "nlp": turn.nlp_s,
            "tts_first_chunk": turn.tts_first_s or 0.0,
            "end_to_end": e2e,
        }
        for name, value in stages.items():
            await self._send(
                ipc.Metric(name=f"turn_{name}_seconds", value=value, labels={"call": self.call_id})
            )

    def _close_turn(self) -> None:
        turn = self._turn
        if turn is None:
            return
        latencies = {
            "endpointing": turn.endpointing_s,
            "stt": turn.stt_s,
            "stt_wait": turn.stt_wait_s,
            "nlp": turn.nlp_s,
        }
        if turn.tts_first_s is not None and turn.first_audio_wall is not None:
            latencies["tts_first_chunk"] = turn.tts_first_s
            latencies["end_to_end"] = turn.endpointing_s + (
                turn.first_audio_wall - turn.detected_wall
            )
        record = ipc.Turn(
            call_id=self.call_id,
            index=turn.index,
            caller_text=turn.text,
            start=turn.start,
            end=turn.end,
            agent_text=" ".join(turn.agent_text),
            heard_text=" ".join(turn.heard_text),
            intent=turn.intent,
            latencies=latencies,
        )
        self.turn_records.append(record)
        self._turn = None
        self._spawn(self._send(record))


def sounds_finished(text: str) -> bool:
    """Whether Whisper wrote ``text`` as a finished sentence (not trailing off)."""
    text = text.rstrip()
    return text.endswith((".", "?", "!")) and not text.endswith("..")


def _consume(future: asyncio.Future[Transcription]) -> None:
    if not future.cancelled():
        future.exception()


def _put(cache: PromptCache, text: str, audio: bytes) -> None:
    try:
        cache.put(text, audio)
    except OSError as exc:
        log.warning("prompt cache write failed: %s", exc)
