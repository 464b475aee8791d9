"""Tenant calls: history (list with filters and cursor pagination, detail with
events and transcript turns, the stereo recording) and hanging up a live call.

The history routes need only the store and the data directory. ``DELETE
calls/{call_id}`` hangs up a call live on this server, whatever its provider
(Twilio, SIP, WebRTC), through its channel; 404 when the call is not live here
or belongs to another tenant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from voxgate.media.call import EndReason
from voxgate.media.recorder import RecorderError, recording_path
from voxgate.server.call_control import CALLS
from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, QueryParam, RouteTable
from voxgate.server.state import CONFIG, SERVICES
from voxgate.tenants.calls import CallDetail, CallFilter, CallPage, CallRecords, check_call_id
from voxgate.tenants.errors import NotFound

__all__ = ["HANGUP_TIMEOUT", "register"]

log = logging.getLogger("voxgate.calls")

HANGUP_TIMEOUT = 5.0
"""Longest a DELETE waits for the transport to hang up (the call ends regardless)."""

_STATUSES = ["ringing", "in_progress", "completed", "failed", "busy", "no_answer", "canceled"]


def _records(call: Call[Any]) -> CallRecords:
    return CallRecords(call.request.app[SERVICES].store)


def _number(query: Any, name: str) -> float | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ApiError(422, "invalid", f"{name} must be a Unix time in seconds", name) from None


def _filters(call: Call[Any]) -> tuple[CallFilter, str | None, int]:
    query = call.request.query
    status = query.get("status") or None
    if status is not None and status not in _STATUSES:
        raise ApiError(422, "invalid", f"status must be one of {', '.join(_STATUSES)}", "status")
    direction = query.get("direction") or None
    if direction not in (None, "inbound", "outbound"):
        raise ApiError(422, "invalid", "direction must be inbound or outbound", "direction")
    limit_text = query.get("limit", "50")
    try:
        limit = int(limit_text)
    except ValueError:
        raise ApiError(422, "invalid", "limit must be an integer", "limit") from None
    if not 1 <= limit <= 500:
        raise ApiError(422, "invalid", "limit must be 1..500", "limit")
    filters = CallFilter(
        agent_id=query.get("agent_id") or None,
        provider=query.get("provider") or None,
        direction=direction,
        status=status,
        since=_number(query, "since"),
        until=_number(query, "until"),
    )
    return filters, query.get("cursor") or None, limit


async def _hang_up(call: Call[None]) -> None:
    call_id = check_call_id(call.param("call_id"))
    runtime = call.request.app[CALLS]
    live = runtime.control.get(call_id)
    if live is None or live.tenant_id != call.tenant_id:
        raise NotFound(f"no live call {call_id!r}")
    channel = live.channel
    if channel is None:
        raise ApiError(409, "not_connected", "the call's media has not connected yet")
    # A browser call's DELETE comes from its caller; any other call is ended by us.
    reason = EndReason.CALLER_HANGUP if live.provider == "webrtc" else EndReason.AGENT_HANGUP
    channel.call.record(time.time(), "hangup_requested", "api")
    # Shielded and tracked: a client that goes away mid-request must not cut a hangup short.
    hangup = asyncio.get_running_loop().create_task(channel.hangup(reason))
    runtime.endings.add(hangup)
    hangup.add_done_callback(runtime.endings.discard)
    done, _ = await asyncio.wait((hangup,), timeout=HANGUP_TIMEOUT)
    if not done:
        log.warning("call %s: hangup still running after %.0f s", call_id, HANGUP_TIMEOUT)
    elif not hangup.cancelled() and hangup.exception() is not None:
        log.warning("call %s: hangup failed: %s", call_id, hangup.exception())


def register(table: RouteTable) -> None:
    """Declare the tenant call routes on ``table``."""
    tags = ("calls",)
    base = "/tenants/{tenant_id}/api/calls"

    @table.route(
        "GET", base, auth=Auth.TENANT, response=CallPage, tags=tags, errors=(404, 422),
        summary="Calls, newest first (filters; pass next_cursor as cursor for more)",
        query=(
            QueryParam("agent_id", {"type": "string"}, "Only this agent's calls"),
            QueryParam("provider", {"type": "string", "enum": ["twilio", "sip", "webrtc"]}),
            QueryParam("status", {"type": "string", "enum": _STATUSES}),
            QueryParam("direction", {"type": "string", "enum": ["inbound", "outbound"]}),
            QueryParam("since", {"type": "number"}, "Created at or after (Unix seconds)"),
            QueryParam("until", {"type": "number"}, "Created at or before (Unix seconds)"),
            QueryParam("cursor", {"type": "string"}, "next_cursor of the previous page"),
            QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
        ),
    )  # fmt: skip
    async def list_calls(call: Call[None]) -> CallPage:
        filters, cursor, limit = _filters(call)
        return await _records(call).list(call.tenant_id, filters, cursor=cursor, limit=limit)

    @table.route(
        "GET", base + "/{call_id}", auth=Auth.TENANT, response=CallDetail, tags=tags,
        errors=(404,), summary="One call: record, events and transcript turns",
    )  # fmt: skip
    async def get_call(call: Call[None]) -> CallDetail:
        return await _records(call).detail(call.tenant_id, call.param("call_id"))

    @table.route(
        "DELETE", base + "/{call_id}", auth=Auth.TENANT, status=204, tags=tags,
        errors=(404, 409),
        summary="Hang up a live call (Twilio, SIP or WebRTC); 404 when it is not live",
    )  # fmt: skip
    async def hang_up_call(call: Call[None]) -> None:
        await _hang_up(call)

    @table.route(
        "GET", base + "/{call_id}/recording", auth=Auth.TENANT, response_media="audio/wav",
        tags=tags, errors=(404,),
        summary="The call's recording: stereo 8 kHz WAV, caller left, agent right",
    )  # fmt: skip
    async def get_call_recording(call: Call[None]) -> web.StreamResponse:
        call_id = check_call_id(call.param("call_id"))
        record = await _records(call).get(call.tenant_id, call_id)
        if not record.recording:
            raise NotFound(f"call {call_id!r} has no recording")
        data_dir: Path = call.request.app[CONFIG].data_dir
        try:
            # Rebuilt from ids, never taken from the stored string: no path tricks.
            path = recording_path(data_dir, call.tenant_id, call_id)
        except RecorderError:
            raise NotFound(f"call {call_id!r} has no recording") from None
        if not path.is_file():
            raise NotFound(f"call {call_id!r} has no recording")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "audio/wav",
                "Content-Disposition": f'attachment; filename="{call_id}.wav"',
            },
        )
