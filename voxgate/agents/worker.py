"""Speech worker process: ``python -m voxgate.agents.worker --fd N``.

The supervisor passes one end of a socketpair as fd ``N``. The worker loads every
model first and only then sends :class:`~voxgate.agents.ipc.Hello`, so "ready"
means "can take a call now". It belongs to at most one tenant: the one in
``HelloAck`` or, failing that, the one of its first call; calls of any other tenant
are refused. It runs up to ``--max-calls`` calls at once and exits on
``EndWorker`` or when the socket closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import psutil

# lazy_imports first (isort keeps it before every other voxgate.agents module): it
# defers PyAV before faster-whisper imports it; see that module.
from voxgate.agents import ipc, lazy_imports  # noqa: F401
from voxgate.agents.flowspec import FlowValidationError, parse_flow
from voxgate.agents.inference import InferenceScheduler, usable_cores
from voxgate.agents.models import ModelError, SpeechModelConfig, enforce_offline
from voxgate.agents.pipeline import CallPipeline, PipelineResources
from voxgate.agents.stt import SpeechRecognizer, SttConfig
from voxgate.agents.tts import SpeechSynthesizer
from voxgate.agents.vad import VadPool

log = logging.getLogger("voxgate.worker")

HELLO_ACK_TIMEOUT = 30.0
MMAP_THRESHOLD = 256 * 1024
"""Allocations from this size up get their own mapping, returned to the OS on free."""
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
EXIT_MODEL_ERROR = 3
EXIT_PROTOCOL_ERROR = 4


class MallocTuning:
    """glibc heap settings that keep a long-lived worker's RSS near what it uses.

    Audio buffers, mel features and Piper output are numpy arrays of 100 KB to a few
    MB that live for one turn. glibc raises its mmap threshold each time such a
    block is freed, after which they come from the heap, which fragments and never
    shrinks: RSS creeps up with every call. A fixed threshold keeps them in their
    own mappings; ``trim`` hands the heap's free tail back after a call ends.
    (``MALLOC_ARENA_MAX`` is set by the supervisor; it must be in the environment
    before the process starts.) A no-op where the C library is not glibc.
    """

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None
        name = ctypes.util.find_library("c")
        if name is None or not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL(name)
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            return
        self._libc = libc

    @property
    def available(self) -> bool:
        return self._libc is not None

    def fix_mmap_threshold(self, size: int = MMAP_THRESHOLD) -> bool:
        return self._libc is not None and bool(self._libc.mallopt(_M_MMAP_THRESHOLD, size))

    def trim(self) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)


def inference_threads(requested: int | None = None) -> int:
    """Inference threads of a worker: one per usable core unless told otherwise.

    Every Whisper/Piper job runs single-threaded (``stt_cpu_threads`` /
    ``tts_threads`` 1), so one job per core keeps the cores busy without
    time-slicing jobs against each other (which makes all of them late).
    """
    return requested if requested else usable_cores()


def load_resources(
    models: SpeechModelConfig,
    *,
    max_calls: int,
    stt: SttConfig | None = None,
    threads: int | None = None,
) -> PipelineResources:
    """Load every model once (blocking) and build the worker's scheduler and pools."""
    recognizer = SpeechRecognizer(models, stt)
    synthesizer = SpeechSynthesizer(models)
    # One shared Silero session; a call's VAD stream is only its state (see vad.py).
    vad_pool = VadPool(
        None if models.vad_model is None else Path(models.vad_model),
        prewarm=max(1, max_calls),
        shared=True,
    )
    return PipelineResources(
        stt=recognizer,
        tts=synthesizer,
        vad_pool=vad_pool,
        inference=InferenceScheduler(
            inference_threads(threads), max_queued=max(16, 4 * max_calls), name="infer"
        ),
        realtime=ThreadPoolExecutor(max_workers=2, thread_name_prefix="vad"),
    )


class Worker:
    """Frame dispatcher of one worker process (see module docstring)."""

    def __init__(
        self, channel: ipc.Channel, resources: PipelineResources, *, max_calls: int
    ) -> None:
        self.channel = channel
        self.resources = resources
        self.max_calls = max_calls
        self.tenant_id: str | None = None
        self.calls: dict[str, CallPipeline] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._process = psutil.Process()
        self.malloc = MallocTuning()

    async def handshake(self) -> None:
        models = {
            "stt": self.resources.stt.model_name,
            "tts": self.resources.tts.voice_id,
            "vad": "silero",
        }
        await self.channel.send(
            ipc.Hello(
                version=ipc.PROTOCOL_VERSION,
                pid=os.getpid(),
                max_calls=self.max_calls,
                models=models,
            )
        )
        frame = await asyncio.wait_for(self.channel.recv(), HELLO_ACK_TIMEOUT)
        if not isinstance(frame, ipc.HelloAck):
            raise ipc.IpcError(f"expected hello_ack, got {type(frame).__name__}")
        ipc.check_version(frame.version)
        self.tenant_id = frame.tenant_id

    async def serve(self) -> None:
        try:
            while True:
                try:
                    frame = await self.channel.recv()
                except ipc.ChannelClosed:
                    return
                if isinstance(frame, ipc.EndWorker):
                    return
                await self._dispatch(frame)
        finally:
            await self._end_all("worker_exit")

    async def _dispatch(self, frame: ipc.Frame) -> None:
        if isinstance(frame, ipc.AudioIn):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.feed_audio(frame)
        elif isinstance(frame, ipc.Mark):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.on_mark(frame.name)
        elif isinstance(frame, ipc.Ping):
            await self.channel.send(
                ipc.Pong(
                    seq=frame.seq,
                    sent_at=frame.sent_at,
                    calls=len(self.calls),
                    rss_bytes=self._process.memory_info().rss,
                )
            )
        elif isinstance(frame, ipc.StartCall):
            await self._start_call(frame)
        elif isinstance(frame, ipc.EndCall):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.end(frame.reason or "ended")
        elif isinstance(frame, ipc.Dtmf):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.on_dtmf(frame.digit)
        elif isinstance(frame, ipc.TransferResult):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.on_transfer_result(frame.ok, frame.reason)
        else:
            await self.channel.send(
                ipc.Error(code="unexpected_frame", message=f"worker does not take {type(frame)}")
            )

    async def _start_call(self, frame: ipc.StartCall) -> None:
        async def refuse(code: str, message: str) -> None:
            await self.channel.send(ipc.Error(code=code, message=message, call_id=frame.call_id))

        if self.tenant_id is not None and frame.tenant_id != self.tenant_id:
            await refuse("tenant_mismatch", "this worker belongs to another tenant")
            return
        if frame.call_id in self.calls:
            await refuse("duplicate_call", "call already running")
            return
        if len(self.calls) >= self.max_calls:
            await refuse("worker_full", f"worker runs {self.max_calls} calls at most")
            return
        try:
            flow, _warnings = parse_flow(frame.flow)
            pipeline = CallPipeline(frame, self.resources, self.channel.send, flow=flow)
        except (FlowValidationError, msgspec.ValidationError, ValueError) as exc:
            await refuse("bad_flow", str(exc))
            return
        # Bound for life: a worker never serves a second tenant.
        self.tenant_id = frame.tenant_id
        self.calls[frame.call_id] = pipeline
        self._tasks[frame.call_id] = asyncio.get_running_loop().create_task(
            self._run_call(pipeline), name=f"call-{frame.call_id}"
        )

    async def _run_call(self, pipeline: CallPipeline) -> None:
        reason = "ended"
        try:
            await pipeline.run()
        except ipc.ChannelClosed:
            return
        except Exception as exc:
            log.exception("call %s failed", pipeline.call_id)
            reason = "error"
            with contextlib.suppress(ipc.ChannelClosed):
                await self.channel.send(
                    ipc.Error(code="call_failed", message=str(exc), call_id=pipeline.call_id)
                )
        finally:
            self.calls.pop(pipeline.call_id, None)
            self._tasks.pop(pipeline.call_id, None)
            # Off the loop: trimming a large heap can take a few milliseconds. (Not
            # possible once the pools are shut down; nothing is lost then.)
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().run_in_executor(
                    self.resources.realtime, self.malloc.trim
                )
        with contextlib.suppress(ipc.ChannelClosed):
            await self.channel.send(ipc.CallEnded(call_id=pipeline.call_id, reason=reason))

    async def _end_all(self, reason: str) -> None:
        for call in list(self.calls.values()):
            call.end(reason)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for task in tasks:
            task.cancel()


async def run_worker(sock: socket.socket, resources: PipelineResources, *, max_calls: int) -> None:
    channel = await ipc.Channel.open(sock)
    worker = Worker(channel, resources, max_calls=max_calls)
    try:
        await worker.handshake()
        await worker.serve()
    finally:
        await resources.side_work.close()
        await channel.close()
        if isinstance(resources.inference, InferenceScheduler):
            log.info("inference scheduler: %s", resources.inference.stats.as_dict())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voxgate.agents.worker")
    parser.add_argument("--fd", type=int, required=True, help="connected socket fd")
    parser.add_argument("--max-calls", type=int, default=4)
    parser.add_argument("--stt-model", default=None)
    parser.add_argument("--stt-threads", type=int, default=1)
    parser.add_argument("--stt-workers", type=int, default=2)
    parser.add_argument("--tts-voice", default=None)
    parser.add_argument("--tts-threads", type=int, default=1)
    parser.add_argument("--inference-threads", type=int, default=0, help="0: one per usable core")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--webhook-allow-private",
        action="store_true",
        help="let webhook nodes reach loopback/private addresses (tests, single-host setups)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s worker[%(process)d] %(message)s"
    )
    enforce_offline(os.environ)
    MallocTuning().fix_mmap_threshold()
    threads = inference_threads(args.inference_threads)
    models = SpeechModelConfig(
        stt_model=args.stt_model,
        stt_cpu_threads=args.stt_threads,
        # Whisper runs at most this many decodes at once: never fewer than the threads.
        stt_num_workers=max(args.stt_workers, threads),
        tts_voice=args.tts_voice,
        tts_threads=args.tts_threads,
    )
    started = time.perf_counter()
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as exc:
        log.error("bad --fd %s: %s", args.fd, exc)
        return EXIT_PROTOCOL_ERROR
    try:
        resources = load_resources(models, max_calls=args.max_calls, threads=threads)
        resources.side_work.allow_private_webhooks = args.webhook_allow_private
    except ModelError as exc:
        log.error("model load failed: %s", exc)
        sock.close()
        return EXIT_MODEL_ERROR
    log.info("models loaded in %.2f s", time.perf_counter() - started)
    try:
        asyncio.run(run_worker(sock, resources, max_calls=args.max_calls))
    except (ipc.IpcError, TimeoutError) as exc:
        log.error("protocol error: %s", exc)
        return EXIT_PROTOCOL_ERROR
    finally:
        resources.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
