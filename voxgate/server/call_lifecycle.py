"""An answered call from its first frame to its record: one lifecycle for every transport.

A transport (Twilio Media Streams, SIP/RTP, WebRTC) answers a call, builds
its :class:`~voxgate.media.call.Call` (answered, ``provider`` set to
``"twilio"``/``"sip"``/``"webrtc"``) and its channel (a
:class:`~voxgate.media.channel.PacedChannel` subclass), optionally opens a
recording with :func:`open_recording` (the channel writes to
``recording.recorder``), and then awaits::

    await CallLifecycle(runtime).run(channel, agent, transport, recording=recording)

where ``transport`` is a :class:`CallTransport` (three hooks, below) and
``agent`` a :class:`~voxgate.media.channel.CallAgent` or an awaitable of
one (a lookup; awaited inside the lifecycle, so a lookup that fails or is
cancelled still ends the call properly). ``run`` then:

1. attaches the call to ``runtime.control`` (its admission becomes a live
   call; a reservation that lapsed meanwhile is re-added);
2. marks the record ``in_progress``: a record the provider's webhook or the
   outbound orchestrator wrote is updated (``started_at``,
   ``recording_path``), else one is created. Redis being down is logged and
   the call goes on;
3. runs ``agent.run(channel)`` and ``transport.serve()`` side by side until
   either returns or the channel closes (which makes a well-behaved agent
   return; one that does not is cancelled in the ending). An agent that
   returns with the channel open is hung up for (``AGENT_HANGUP``;
   ``ERROR`` when it raised: agent exceptions are logged, never
   propagated); an open channel after anything else (the transport ended
   first, an error, the driving task cancelled) is closed by
   ``transport.abort()``, or with ``ERROR`` if that left it open;
4. the ending, as a task tracked in ``runtime.endings`` and shielded from
   the driving task's cancellation (aiohttp cancels a handler whose peer
   disconnected): stop ``serve``; give the agent ``agent_stop_timeout``
   seconds to return, then cancel it; ``await transport.close()`` (release
   sockets, return extra events for the record); finish the recording;
   write the end of the record (status ``failed`` for ``ERROR`` else
   ``completed``, ``ended_at``, ``duration``, ``end_reason``, frame counts,
   ``recording`` and its path) and append the call's events plus the
   transport's; and, whatever failed before, ``runtime.control.release``.

``run`` returns once the ending is done and raises nothing but
``CancelledError``: a cancelled ``run`` returns at once, and its ending
completes on its own (``runtime.endings`` holds it until then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from voxgate.media.call import Call as MediaCall
from voxgate.media.call import CallEvent, EndReason
from voxgate.media.channel import CallAgent, PacedChannel
from voxgate.media.recorder import CallRecorder, RecorderError, RecordingWriter, recording_path
from voxgate.server.call_control import CallRuntime
from voxgate.tenants.calls import CallDirection, CallEventEntry, CallRecord, CallRecordStatus
from voxgate.tenants.errors import NotFound, TenantsError

__all__ = [
    "AGENT_STOP_TIMEOUT",
    "RECORDING_TIMEOUT",
    "CallLifecycle",
    "CallTransport",
    "Recording",
    "open_recording",
]

log = logging.getLogger("voxgate.calls")

AGENT_STOP_TIMEOUT = 2.0  # seconds an agent gets to return once its call is over
RECORDING_TIMEOUT = 5.0  # seconds the writer thread gets to close a call's recording


class CallTransport(Protocol):
    """What a transport does in its call's lifecycle (see the module docstring)."""

    async def serve(self) -> None:
        """Carry the call until the transport ends (read the socket, wait for BYE).

        Runs as its own task; cancelled once the call is over.
        """

    def abort(self) -> None:
        """Close the channel, still open although the call is stopping.

        The driving task failed or was cancelled, or ``serve`` returned first;
        pick the end reason the transport knows (else ``ERROR``). Must not block.
        """

    async def close(self) -> Sequence[CallEvent]:
        """The agent has stopped: release the transport; events to add to the record."""


@dataclass(frozen=True, slots=True)
class Recording:
    """A call's recording: the recorder its channel writes to and the record's path."""

    recorder: CallRecorder
    path: str  # relative to the data directory, as stored on the call record


def open_recording(
    writer: RecordingWriter | None, data_dir: Path, call: MediaCall, now: float
) -> Recording | None:
    """Start recording ``call`` (``now``: loop time); None without a writer or on error."""
    if writer is None:
        return None
    try:
        path = recording_path(data_dir, call.tenant_id, call.call_id)
        recorder = CallRecorder(writer, path, now)
    except RecorderError:
        log.warning("call %s: cannot record", call.call_id)
        return None
    return Recording(recorder, str(path.relative_to(data_dir)))


class CallLifecycle:
    """Runs answered calls of one runtime to their end and record (module docstring)."""

    def __init__(
        self,
        runtime: CallRuntime,
        *,
        agent_stop_timeout: float = AGENT_STOP_TIMEOUT,
        recording_timeout: float = RECORDING_TIMEOUT,
    ) -> None:
        self.runtime = runtime
        self.agent_stop_timeout = agent_stop_timeout
        self.recording_timeout = recording_timeout

    async def run(
        self,
        channel: PacedChannel,
        agent: CallAgent | Awaitable[CallAgent],
        transport: CallTransport,
        *,
        recording: Recording | None = None,
        direction: CallDirection = "inbound",
    ) -> None:
        """Run the answered call on ``channel`` to its end and record."""
        loop = asyncio.get_running_loop()
        call = channel.call
        recorder = recording.recorder if recording is not None else None
        self.runtime.control.attach(call, channel, recorder)
        agent_task: asyncio.Task[None] | None = None
        serve_task: asyncio.Task[None] | None = None
        cancelled = False
        try:
            await self._record_start(call, recording, direction)
            resolved = await self._resolve(call, agent)
            if resolved is not None:
                agent_task = loop.create_task(resolved.run(channel), name=f"agent-{call.call_id}")
                serve_task = loop.create_task(transport.serve(), name=f"serve-{call.call_id}")
                closed_task = loop.create_task(channel.wait_closed())
                try:
                    await asyncio.wait(
                        (agent_task, serve_task, closed_task), return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    closed_task.cancel()
                if agent_task.done() and not channel.closed:
                    await self._hang_up_for(channel, agent_task)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if agent_task is None and asyncio.iscoroutine(agent):
                agent.close()  # a lookup the call never reached: no "never awaited"
            if not channel.closed:
                try:
                    transport.abort()
                except Exception:
                    log.exception("call %s: transport abort failed", call.call_id)
                channel.deliver_closed(EndReason.ERROR)  # no-op once closed
            ending = loop.create_task(
                self._end(channel, transport, agent_task, serve_task, recording),
                name=f"call-end-{call.call_id}",
            )
            self.runtime.endings.add(ending)
            ending.add_done_callback(self.runtime.endings.discard)
            if not cancelled:  # a cancelled driver goes at once; its ending goes on
                await asyncio.shield(ending)

    # -- the call --------------------------------------------------------------
    async def _resolve(
        self, call: MediaCall, agent: CallAgent | Awaitable[CallAgent]
    ) -> CallAgent | None:
        if not isinstance(agent, Awaitable):
            return agent
        try:
            resolved: CallAgent = await agent
        except Exception:
            log.exception("call %s: no agent", call.call_id)
            return None
        return resolved

    async def _hang_up_for(self, channel: PacedChannel, agent_task: asyncio.Task[None]) -> None:
        """The agent returned with the call up: end it (``ERROR`` if the agent failed)."""
        failed = agent_task.cancelled() or agent_task.exception() is not None
        reason = EndReason.ERROR if failed else EndReason.AGENT_HANGUP
        try:
            await channel.hangup(reason)
        except Exception:
            log.exception("call %s: hangup failed", channel.call.call_id)

    async def _record_start(
        self, call: MediaCall, recording: Recording | None, direction: CallDirection
    ) -> None:
        records = self.runtime.records
        changes: dict[str, Any] = {
            "status": "in_progress",
            "started_at": call.answered_at,
            "recording_path": recording.path if recording is not None else None,
        }
        try:
            try:
                await records.update(call.tenant_id, call.call_id, **changes)
            except NotFound:
                record = CallRecord(
                    id=call.call_id,
                    tenant_id=call.tenant_id,
                    agent_id=call.agent_id,
                    provider=call.provider,
                    from_number=call.from_number,
                    to_number=call.to_number,
                    direction=direction,
                    created_at=call.created_at,
                    **changes,
                )
                await records.create(record)
        except TenantsError as exc:
            # The call goes on; its record is rewritten at the end.
            log.warning("call %s: start record not written: %s", call.call_id, exc)

    # -- the ending ------------------------------------------------------------
    async def _end(
        self,
        channel: PacedChannel,
        transport: CallTransport,
        agent_task: asyncio.Task[None] | None,
        serve_task: asyncio.Task[None] | None,
        recording: Recording | None,
    ) -> None:
        call = channel.call
        try:
            if serve_task is not None:
                await _stop(serve_task, call, "transport", self.agent_stop_timeout)
            if agent_task is not None:
                await self._stop_agent(agent_task, call)
            extra: Sequence[CallEvent] = ()
            try:
                extra = await transport.close()
            except Exception:
                log.exception("call %s: closing the transport failed", call.call_id)
            recorded = await self._finish_recording(call, recording)
            await self._record_end(channel, recorded, extra)
        except Exception:  # the ending is bookkeeping: log, never fail the transport
            log.exception("call %s: ending failed", call.call_id)
        finally:
            self.runtime.control.release(call.call_id)

    async def _stop_agent(self, task: asyncio.Task[None], call: MediaCall) -> None:
        if not task.done():
            await asyncio.wait((task,), timeout=self.agent_stop_timeout)
        if not task.done():
            log.warning("call %s: agent still running after the call; cancelled", call.call_id)
        await _stop(task, call, "agent", self.agent_stop_timeout)

    async def _finish_recording(self, call: MediaCall, recording: Recording | None) -> bool:
        if recording is None:
            return False
        loop = asyncio.get_running_loop()
        try:
            info = await asyncio.wait_for(
                asyncio.wrap_future(recording.recorder.finish(loop.time())),
                self.recording_timeout,
            )
        except (RecorderError, TimeoutError) as exc:
            log.warning("call %s: recording incomplete: %s", call.call_id, exc)
            return False
        return info.bytes_written > 0

    async def _record_end(
        self, channel: PacedChannel, recorded: bool, extra: Sequence[CallEvent]
    ) -> None:
        call = channel.call
        end = call.end_reason or EndReason.ERROR
        status: CallRecordStatus = "failed" if end is EndReason.ERROR else "completed"
        changes: dict[str, Any] = {
            "status": status,
            "ended_at": call.ended_at or time.time(),
            "duration": call.duration,
            "end_reason": end.value,
            "recording": recorded,
            "frames_in": channel.frames_in,
            "frames_out": channel.frames_out,
        }
        if not recorded:
            changes["recording_path"] = None
        events = [
            CallEventEntry(at=e.at, kind=e.kind, detail=e.detail) for e in (*call.events, *extra)
        ]
        records = self.runtime.records
        try:
            await records.update(call.tenant_id, call.call_id, **changes)
            await records.append_events(call.tenant_id, call.call_id, events)
        except TenantsError as exc:
            log.warning("call %s: end record not written: %s", call.call_id, exc)


async def _stop(task: asyncio.Task[None], call: MediaCall, what: str, grace: float) -> None:
    """Cancel ``task`` unless done, give it ``grace`` seconds to go, log how it failed."""
    if not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=grace)
        if not task.done():
            log.error("call %s: %s ignores cancellation; left running", call.call_id, what)
            return
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("call %s: %s failed", call.call_id, what, exc_info=exc)
