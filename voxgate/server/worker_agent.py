"""The ``CallAgent`` of ``flow`` agents: bridges a call's ``MediaChannel`` to a speech worker.

Inbound, every 20 ms caller frame goes to the worker as ``AudioIn`` (dropped,
never queued, when the worker falls behind: stale audio is worse than a gap),
DTMF as ``Dtmf``, and each mark the caller really heard as ``Mark`` — the
worker records only heard text in the transcript. Outbound, ``AudioOut``
chunks are queued for paced playout with their marks, ``Interrupt`` becomes
``channel.clear()`` at once (the frame clock sends Twilio's ``clear`` on its
next tick), ``Hangup`` waits until the caller has heard what was queued,
``Transfer`` asks the outbound orchestrator (Twilio ``<Dial>`` by call update, SIP
REFER) once the caller heard the words before it; a refused or failed transfer
is reported back as ``TransferResult`` and the worker runs its fallback (an
apology, then a hangup) while the call stays up. Turns and events go to the call record and
to the tenant's Redis pub/sub channel ``vg:{tenant}:events`` through a bounded
per-call writer, so storage never holds up audio.

Flows with ``llm`` or ``webhook`` nodes get the tenant secrets ``llm``
(``base_url``, ``api_key``, ``model``) and ``webhook`` (``secret``, the signing
key) read from the vault at call start and sent in ``StartCall.secrets`` to the
tenant's own worker only; other flows never have a secret read.

When the worker dies (or no worker can be had), the call ends with reason
``worker_lost``: for Twilio the stream closes and Twilio runs the fallback
TwiML that follows ``<Connect>``.

:func:`install_flow_agents` wires it all into an app: the supervisor, the
``flow`` factory of the agent host, ``/system/status`` sections, Prometheus,
and publish-time prompt rendering (:class:`PromptPublisher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
from aiohttp import web

from voxgate.agents import ipc
from voxgate.media.call import Call, EndReason
from voxgate.media.channel import (
    CallAgent,
    ChannelClosed,
    ChannelClosedError,
    InboundAudio,
    MarkReached,
    MediaChannel,
)
from voxgate.media.dtmf import DtmfEvent
from voxgate.media.outqueue import OutboundQueueFull
from voxgate.server.os_limits import detect
from voxgate.server.supervisor import (
    CallLease,
    Supervisor,
    SupervisorConfig,
    SupervisorError,
    WorkerCollector,
    WorkerLost,
)
from voxgate.tenants.keyspace import tenant_key
from voxgate.tenants.models import Agent, Quotas

__all__ = [
    "HANGUP_MARK",
    "CallTransfer",
    "FlowAgentFactory",
    "FlowWorkerAgent",
    "PromptPublisher",
    "RecordSink",
    "SecretReader",
    "SpeechRuntime",
    "TransferError",
    "TurnSink",
    "events_channel",
    "install_flow_agents",
    "read_call_secrets",
    "side_work_secrets",
]

log = logging.getLogger("voxgate.calls")

HANGUP_MARK = "vg-hangup"
HANGUP_WAIT_MAX = 120.0
"""Longest wait for queued audio to play out before an agent hangup (bounded)."""
SINK_QUEUE = 512


class TransferError(Exception):
    """A transfer did not happen; ``code`` is stable (``dial_refused``, ``transfer_failed``…)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


CallTransfer = Callable[[str], Awaitable[str]]
"""Transfers this call to a target (a number or target name); returns the dialled
number or raises :class:`TransferError`."""


class PromptCacheError(ValueError):
    """No prompt cache location for this tenant id."""


def prompt_dir(data_dir: Path, tenant_id: str) -> Path:
    """A tenant's rendered prompts; the layout of ``voxgate.agents.prompt_cache.prompt_dir``.

    Not imported from there: that module loads Piper and onnxruntime, which the
    media core must not carry (memory, and a multi-second first import).
    """
    try:
        tenant_key(tenant_id, "prompts")  # validates the id
    except ValueError as exc:
        raise PromptCacheError(str(exc)) from None
    return data_dir / "blobs" / tenant_id / "prompts"


def events_channel(tenant_id: str) -> str:
    """Redis pub/sub channel of a tenant's live call events (analytics feeds)."""
    return tenant_key(tenant_id, "events")


class TurnSink(Protocol):
    """Where a call's turns and events go (the call record, pub/sub)."""

    def turn(self, call_id: str, turn: dict[str, Any]) -> None: ...

    def event(self, call_id: str, kind: str, detail: str = "") -> None: ...

    async def close(self) -> None: ...


class NullSink:
    """Keeps nothing (tests, previews)."""

    def __init__(self) -> None:
        self.turns: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def turn(self, call_id: str, turn: dict[str, Any]) -> None:
        self.turns.append(turn)

    def event(self, call_id: str, kind: str, detail: str = "") -> None:
        self.events.append((kind, detail))

    async def close(self) -> None:
        return None


class _Records(Protocol):
    async def append_turn(self, tenant_id: str, call_id: str, turn: dict[str, Any]) -> None: ...

    async def append_event(
        self, tenant_id: str, call_id: str, kind: str, detail: str = "", at: float | None = None
    ) -> None: ...


class _Publisher(Protocol):
    def publish(self, channel: str, message: bytes) -> Awaitable[Any]: ...


class RecordSink:
    """Writes turns/events to the call record and publishes them, from one task per call.

    The queue is bounded: if storage stalls, later items are dropped and
    counted rather than holding up the call's audio.
    """

    def __init__(self, tenant_id: str, records: _Records | None, redis: _Publisher | None) -> None:
        self.tenant_id = tenant_id
        self._records = records
        self._redis = redis
        self._queue: asyncio.Queue[tuple[str, str, dict[str, Any]] | None] = asyncio.Queue(
            SINK_QUEUE
        )
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def _put(self, item: tuple[str, str, dict[str, Any]]) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    def turn(self, call_id: str, turn: dict[str, Any]) -> None:
        self._put(("turn", call_id, turn))

    def event(self, call_id: str, kind: str, detail: str = "") -> None:
        self._put(("event", call_id, {"kind": kind, "detail": detail, "at": time.time()}))

    async def _drain(self) -> None:
        channel = events_channel(self.tenant_id)
        while True:
            item = await self._queue.get()
            if item is None:
                return
            what, call_id, data = item
            try:
                if self._records is not None:
                    if what == "turn":
                        await self._records.append_turn(self.tenant_id, call_id, data)
                    else:
                        await self._records.append_event(
                            self.tenant_id, call_id, data["kind"], data["detail"], data["at"]
                        )
                if self._redis is not None:
                    message = {"type": what, "call_id": call_id, **data}
                    await self._redis.publish(channel, msgspec.json.encode(message))
            except Exception as exc:  # storage trouble must never end the call
                log.warning("call %s: %s not stored: %s", call_id, what, exc)

    async def close(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._task, 2.0)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()


class FlowWorkerAgent:
    """Runs one call of a ``flow`` agent in a tenant's speech worker."""

    def __init__(
        self,
        supervisor: Supervisor,
        start: ipc.StartCall,
        quotas: Callable[[], Awaitable[Quotas]],
        sink: TurnSink,
        transfer: CallTransfer | None = None,
        secrets: Callable[[], Awaitable[ipc.CallSecrets]] | None = None,
    ) -> None:
        self._sup = supervisor
        self._start = start
        self._secrets = secrets
        self._quotas = quotas
        self._sink = sink
        self._transfer = transfer
        self._hangup_heard = asyncio.Event()
        self.lease: CallLease | None = None
        self.end_reason: EndReason | None = None
        self.audio_dropped = 0
        self.interrupts = 0
        self.clear_at: list[float] = []

    @property
    def call_id(self) -> str:
        return self._start.call_id

    async def run(self, channel: MediaChannel) -> None:
        try:
            await self._run(channel)
        finally:
            await self._sink.close()

    async def _run(self, channel: MediaChannel) -> None:
        try:
            quotas = await self._quotas()
            start = self._start
            if self._secrets is not None:
                # Read per call (a rotated key applies to the next call); kept only in
                # this frame, which goes to the tenant's own worker.
                start = msgspec.structs.replace(start, secrets=await self._secrets())
            self.lease = await self._sup.start_call(start, quotas)
        except (SupervisorError, TimeoutError) as exc:
            log.warning("call %s: no speech worker: %s", self.call_id, exc)
            self._sink.event(self.call_id, "fallback", f"no speech worker: {exc}")
            await self._end(channel, EndReason.WORKER_LOST)
            return
        lease = self.lease
        self._sink.event(self.call_id, "worker", str(lease.pid))
        loop = asyncio.get_running_loop()
        inbound = loop.create_task(self._inbound(channel, lease), name=f"in-{self.call_id}")
        outbound = loop.create_task(self._outbound(channel, lease), name=f"out-{self.call_id}")
        try:
            await asyncio.wait((inbound, outbound), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (inbound, outbound):
                task.cancel()
            for task in (inbound, outbound):
                with contextlib.suppress(asyncio.CancelledError, ChannelClosedError):
                    await task
            reason = self.end_reason or EndReason.CALLER_HANGUP
            await lease.end(reason.value)
            if not channel.closed:
                await self._end(channel, EndReason.AGENT_HANGUP)

    async def _end(self, channel: MediaChannel, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        with contextlib.suppress(ChannelClosedError):
            await channel.hangup(reason)

    async def _inbound(self, channel: MediaChannel, lease: CallLease) -> None:
        async for event in channel.events():
            if isinstance(event, InboundAudio):
                if not lease.offer_audio(event.payload):
                    self.audio_dropped += 1
            elif isinstance(event, MarkReached):
                if event.name == HANGUP_MARK:
                    self._hangup_heard.set()
                elif event.played:
                    await lease.send(ipc.Mark(call_id=self.call_id, name=event.name))
            elif isinstance(event, DtmfEvent):
                self._sink.event(self.call_id, "dtmf", event.digit)
                await lease.send(ipc.Dtmf(call_id=self.call_id, digit=event.digit))
            elif isinstance(event, ChannelClosed):
                if self.end_reason is None:
                    self.end_reason = event.reason
                return

    async def _outbound(self, channel: MediaChannel, lease: CallLease) -> None:
        call_id = self.call_id
        sink = self._sink
        async for event in lease.events():
            if isinstance(event, ipc.AudioOut):
                await channel.send(event.ulaw)
                if event.mark is not None:
                    with contextlib.suppress(OutboundQueueFull):
                        channel.mark(event.mark)
            elif isinstance(event, ipc.Interrupt):
                channel.clear()
                self.interrupts += 1
                self.clear_at.append(time.monotonic())
                sink.event(call_id, "barge_in")
            elif isinstance(event, ipc.Transcript):
                if event.final:
                    sink.turn(
                        call_id,
                        {
                            "role": event.role,
                            "text": event.text,
                            "start": event.start,
                            "end": event.end,
                            "at": time.time(),
                            **({"heard": True} if event.role == "agent" else {}),
                        },
                    )
            elif isinstance(event, ipc.Turn):
                sink.event(call_id, "turn", msgspec.json.encode(event).decode())
            elif isinstance(event, ipc.AgentSay):
                sink.event(call_id, "agent_say", event.text)
            elif isinstance(event, ipc.Metric):
                if event.name == "turn_end_to_end_seconds":
                    sink.event(call_id, "turn_latency", f"{event.value:.3f}")
            elif isinstance(event, ipc.Hangup):
                sink.event(call_id, "hangup", event.reason)
                await self._hangup_after_audio(channel)
                return
            elif isinstance(event, ipc.Transfer):
                if await self._transfer_call(channel, lease, event.target):
                    return
            elif isinstance(event, ipc.Error):
                sink.event(call_id, "worker_error", f"{event.code}: {event.message}")
                await self._end(channel, EndReason.WORKER_LOST)
                return
            elif isinstance(event, ipc.CallEnded):
                await self._end(channel, EndReason.AGENT_HANGUP)
                return
            elif isinstance(event, WorkerLost):
                sink.event(call_id, "worker_lost", event.reason)
                await self._end(channel, EndReason.WORKER_LOST)
                return

    async def _transfer_call(self, channel: MediaChannel, lease: CallLease, target: str) -> bool:
        """Transfer once the caller heard what is queued; True when the call left us.

        On failure the worker hears ``TransferResult(ok=False)`` and the call goes on.
        """
        call_id = self.call_id
        self._sink.event(call_id, "transfer_requested", target)
        await self._hangup_after_audio(channel, hang=False)
        if channel.closed:
            return True  # the caller hung up while the last words played
        try:
            if self._transfer is None:
                raise TransferError("unavailable", "transfers are not enabled for this call")
            number = await self._transfer(target)
        except TransferError as exc:
            log.info("call %s: transfer to %r failed: %s", call_id, target, exc)
            self._sink.event(call_id, "transfer_failed", str(exc))
            await lease.send(ipc.TransferResult(call_id=call_id, ok=False, reason=exc.code))
            return False
        self._sink.event(call_id, "transferred", number)
        self.end_reason = EndReason.TRANSFER
        with contextlib.suppress(Exception):
            await lease.send(ipc.TransferResult(call_id=call_id, ok=True))
        # Twilio: the call already runs the <Dial> TwiML, closing the stream is ours;
        # SIP: the gateway hung up our leg after the REFER took (then this is a no-op).
        await self._end(channel, EndReason.TRANSFER)
        return True

    async def _hangup_after_audio(self, channel: MediaChannel, *, hang: bool = True) -> None:
        """Wait (bounded) until the caller heard what is queued, then hang up."""
        if channel.has_pending_audio:
            # A second wait (the fallback after a failed transfer) needs a fresh signal.
            self._hangup_heard.clear()
            with contextlib.suppress(OutboundQueueFull, ChannelClosedError):
                channel.mark(HANGUP_MARK)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hangup_heard.wait(), HANGUP_WAIT_MAX)
        if hang:
            await self._end(channel, EndReason.AGENT_HANGUP)


# --- wiring -------------------------------------------------------------------------------------


class PromptPublisher:
    """Renders an agent version's static prompts at publish time, off the media core.

    Each build runs ``python -m voxgate.agents.prompt_build`` -style work in a
    separate process (Piper loads there, not here); builds are deduplicated by
    (tenant, flow hash) and run one at a time.
    """

    def __init__(self, data_dir: Path, *, python: str = sys.executable) -> None:
        self.data_dir = data_dir
        self._python = python
        self._done: set[tuple[str, str]] = set()
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(256)
        self._task: asyncio.Task[None] | None = None
        self.built = 0
        self.failed = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @staticmethod
    def flow_hash(flow: dict[str, Any]) -> str:
        return hashlib.sha256(msgspec.json.encode(flow)).hexdigest()[:16]

    def schedule(self, tenant_id: str, flow: dict[str, Any] | None) -> bool:
        """Queue a build unless this exact flow was built already; False if skipped."""
        if flow is None:
            return False
        key = (tenant_id, self.flow_hash(flow))
        if key in self._done:
            return False
        self._done.add(key)
        try:
            self._queue.put_nowait((tenant_id, flow))
        except asyncio.QueueFull:
            self._done.discard(key)
            return False
        self.idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="prompt-build")
        return True

    async def _run(self) -> None:
        while not self._queue.empty():
            tenant_id, flow = self._queue.get_nowait()
            try:
                directory = prompt_dir(self.data_dir, tenant_id)
            except PromptCacheError as exc:
                log.warning("prompt build skipped: %s", exc)
                continue
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-c",
                _BUILD_SNIPPET,
                str(directory),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                # Its own session: a terminal's Ctrl-C reaches the server, which stops it.
                start_new_session=True,
            )
            try:
                _out, err = await proc.communicate(msgspec.json.encode(flow))
            except asyncio.CancelledError:
                # Shutting down: a half-rendered prompt set is rebuilt next start.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            if proc.returncode == 0:
                self.built += 1
            else:
                self.failed += 1
                log.warning("prompt build for %s failed: %s", tenant_id, err.decode()[-300:])
        self.idle.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# Runs in a child process: renders the static prompts of the flow on stdin into argv[1].
_BUILD_SNIPPET = """
import sys
from pathlib import Path
import msgspec
from voxgate.agents.flowspec import parse_flow, static_prompts
from voxgate.agents.prompt_cache import PromptCache
from voxgate.agents.tts import SpeechSynthesizer
flow, _ = parse_flow(msgspec.json.decode(sys.stdin.buffer.read()))
synth = SpeechSynthesizer()
PromptCache(Path(sys.argv[1]), synth.settings_key).build(static_prompts(flow), synth)
"""


SecretReader = Callable[[str, str], Awaitable[dict[str, Any] | None]]
"""Reads one tenant secret by (tenant id, name); ``SecretVault.get``."""

_SIDE_WORK_SECRETS = {"llm": ("llm",), "webhook": ("webhook",)}
"""Node type -> the tenant secrets its side work needs in the worker."""
_SECRET_FIELDS = {"llm": ("base_url", "api_key", "model"), "webhook": ("secret",)}
"""The fields of each secret that are passed on (nothing else a tenant stored there)."""


def side_work_secrets(flow: dict[str, Any]) -> tuple[str, ...]:
    """Names of the tenant secrets the flow's ``llm``/``webhook`` nodes need, sorted.

    Walks every ``nodes`` list in the document (subflows included), so an agent
    without such nodes never has a secret read or sent for its calls.
    """
    names: set[str] = set()
    pending: list[Any] = [flow]
    for _ in range(100_000):  # documents are size-limited; bound the walk anyway
        if not pending:
            break
        item = pending.pop()
        if isinstance(item, dict):
            nodes = item.get("nodes")
            if isinstance(nodes, list):
                for node in nodes:
                    if isinstance(node, dict):
                        names.update(_SIDE_WORK_SECRETS.get(str(node.get("type")), ()))
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return tuple(sorted(names))


async def read_call_secrets(
    reader: SecretReader, tenant_id: str, names: tuple[str, ...]
) -> ipc.CallSecrets:
    """The named secrets of the tenant, reduced to the fields side work uses.

    A missing or unreadable secret is left out: the node then takes its
    ``error`` port in the worker, and the call goes on. Values are never logged.
    """
    found: dict[str, dict[str, str]] = {}
    for name in names:
        try:
            value = await reader(tenant_id, name)
        except Exception as exc:  # storage trouble must not keep the call from starting
            log.warning(
                "tenant %s: secret %r not readable: %s", tenant_id, name, type(exc).__name__
            )
            continue
        if value is None:
            continue
        found[name] = {
            key: value[key] for key in _SECRET_FIELDS[name] if isinstance(value.get(key), str)
        }
    return ipc.CallSecrets(llm=found.get("llm"), webhook=found.get("webhook"))


class FlowAgentFactory:
    """``AgentHost`` factory for ``flow`` agents (see ``agent_host.AgentFactory``)."""

    def __init__(
        self,
        supervisor: Supervisor,
        *,
        quotas: Callable[[str], Awaitable[Quotas]],
        sink: Callable[[str], TurnSink],
        data_dir: Path | None = None,
        prompts: PromptPublisher | None = None,
        settings: ipc.CallSettings | None = None,
        transfer: Callable[[Call, str], Awaitable[str]] | None = None,
        secrets: SecretReader | None = None,
    ) -> None:
        self.supervisor = supervisor
        self._secret_reader = secrets
        self._quotas = quotas
        self._sink = sink
        self._transfer = transfer
        self._data_dir = data_dir
        self._prompts = prompts
        self._settings = settings or ipc.CallSettings()

    def __call__(self, agent: Agent, call: Call) -> CallAgent:
        if agent.flow is None:
            raise ValueError(f"agent {agent.id} has no flow")
        settings = self._settings
        if self._data_dir is not None:
            with contextlib.suppress(PromptCacheError):
                cache = str(prompt_dir(self._data_dir, call.tenant_id))
                settings = msgspec.structs.replace(settings, prompt_cache_dir=cache)
        if self._prompts is not None:
            self._prompts.schedule(call.tenant_id, agent.flow)
        start = ipc.StartCall(
            call_id=call.call_id,
            tenant_id=call.tenant_id,
            agent_id=agent.id,
            flow=agent.flow,
            settings=settings,
        )
        tenant_id = call.tenant_id

        async def quotas() -> Quotas:
            return await self._quotas(tenant_id)

        transfer: CallTransfer | None = None
        if self._transfer is not None:
            transfer_fn = self._transfer

            async def transfer(target: str) -> str:
                return await transfer_fn(call, target)

        return FlowWorkerAgent(
            self.supervisor,
            start,
            quotas,
            self._sink(tenant_id),
            transfer=transfer,
            secrets=self._call_secrets(tenant_id, agent.flow),
        )

    def _call_secrets(
        self, tenant_id: str, flow: dict[str, Any]
    ) -> Callable[[], Awaitable[ipc.CallSecrets]] | None:
        """How to read the secrets this flow's side work needs (None: it needs none)."""
        reader = self._secret_reader
        names = side_work_secrets(flow)
        if reader is None or not names:
            return None

        async def read() -> ipc.CallSecrets:
            return await read_call_secrets(reader, tenant_id, names)

        return read


@dataclass(frozen=True, slots=True)
class SpeechRuntime:
    """What :func:`install_flow_agents` put on an app."""

    supervisor: Supervisor
    factory: FlowAgentFactory
    prompts: PromptPublisher


SPEECH = web.AppKey("voxgate.speech", SpeechRuntime)


def install_flow_agents(
    app: web.Application, *, config: SupervisorConfig | None = None
) -> SpeechRuntime:
    """Serve ``flow`` agents on this app's calls (call after ``install_calls``).

    Idempotent: on an app that has them already, only ``config`` is applied
    (before start-up), so a test can size the pool of the app ``create_app`` built.
    """
    existing = app.get(SPEECH)
    if existing is not None:
        if config is not None:
            existing.supervisor.config = config
        return existing
    from voxgate.server.call_control import CALLS
    from voxgate.server.state import CONFIG, METRICS, SERVICES

    services = app[SERVICES]
    calls = app[CALLS]
    data_dir = app[CONFIG].data_dir
    supervisor = Supervisor(detect(), config)
    prompts = PromptPublisher(data_dir)

    async def quotas(tenant_id: str) -> Quotas:
        return (await services.registry.get(tenant_id)).quotas

    def sink(tenant_id: str) -> TurnSink:
        return RecordSink(tenant_id, calls.records, services.store.redis)

    async def transfer(call: Call, target: str) -> str:
        # The orchestrator exists only once the app started (install_outbound).
        from voxgate.server.outbound import OutboundError
        from voxgate.server.routes_trunks import OUTBOUND

        parts = app.get(OUTBOUND)
        orchestrator = parts.orchestrator if parts is not None else None
        if orchestrator is None:
            raise TransferError("unavailable", "outbound calls are not enabled on this server")
        provider: Literal["twilio", "sip"] = "twilio" if call.provider == "twilio" else "sip"
        try:
            return await orchestrator.transfer(
                call.tenant_id, call.call_id, target, provider=provider
            )
        except OutboundError as exc:
            raise TransferError(exc.code, exc.message) from None

    factory = FlowAgentFactory(
        supervisor,
        quotas=quotas,
        sink=sink,
        data_dir=data_dir,
        prompts=prompts,
        transfer=transfer,
        secrets=services.secrets.get,
    )
    calls.agents.register("flow", factory)
    services.status.register_workers(supervisor.status_workers)

    async def limits() -> dict[str, Any]:
        return supervisor.status_limits()

    services.status.register_limits(limits)
    app[METRICS].registry.register(WorkerCollector(supervisor))
    runtime = SpeechRuntime(supervisor=supervisor, factory=factory, prompts=prompts)
    app[SPEECH] = runtime

    async def on_startup(_app: web.Application) -> None:
        await supervisor.start()
        # Render every existing agent's prompts in the background (publish-time work
        # for agents published before this start).
        with contextlib.suppress(Exception):
            for tenant in await services.registry.list():
                for agent in await services.agents.list(tenant.id):
                    if agent.kind == "flow":
                        supervisor.activate()
                        prompts.schedule(tenant.id, agent.flow)

    async def on_cleanup(_app: web.Application) -> None:
        await prompts.close()
        await supervisor.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return runtime
