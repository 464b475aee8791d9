"""Text preview of an agent: the call's flow engine, over a WebSocket, without audio.

``WS /tenants/{tenant_id}/api/agents/{agent_id}/preview`` runs the same
:class:`~voxgate.agents.flow_engine.FlowEngine` (through the same
:class:`~voxgate.agents.flow_runner.FlowRunner`) a call runs, in this process:
it is pure text in, actions out. The client sends ``{"type": "text", "text"}``
or ``{"type": "dtmf", "digit"}``; the server sends each engine action as JSON
(``say``, ``listen``, ``intent_matched``, ``slot_filled``, ``transfer``,
``hangup``, ``external_done``) and ``{"type": "error", ...}`` for bad input.
A ``say`` counts as heard at once (there is no audio to wait for).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from voxgate.agents.flow_engine import FlowEngine, Hangup, Say
from voxgate.agents.flow_runner import FlowRunner
from voxgate.agents.flowspec import FlowValidationError, parse_flow
from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, RouteTable
from voxgate.server.state import SERVICES, SOCKETS

__all__ = ["PreviewInput", "register"]

MAX_MESSAGE = 4096
MAX_TEXT = 1000


class PreviewText(msgspec.Struct, tag="text", tag_field="type", frozen=True):
    text: str


class PreviewDtmf(msgspec.Struct, tag="dtmf", tag_field="type", frozen=True):
    digit: str


PreviewInput = PreviewText | PreviewDtmf
_DECODER = msgspec.json.Decoder(PreviewInput)


def _error(code: str, message: str) -> str:
    return msgspec.json.encode({"type": "error", "code": code, "message": message}).decode()


def register(table: RouteTable) -> None:
    tags = ("agents",)

    @table.route(
        "GET",
        "/tenants/{tenant_id}/api/agents/{agent_id}/preview",
        auth=Auth.TENANT,
        websocket=True,
        tags=tags,
        errors=(404,),
        summary="WebSocket: text preview of the agent's flow (send text/dtmf, get actions)",
    )
    async def agent_preview(call: Call[None]) -> web.StreamResponse:
        services = call.request.app[SERVICES]
        agent = await services.agents.get(call.tenant_id, call.param("agent_id"))
        if agent.flow is None:
            raise ApiError(409, "no_flow", "this agent has no flow to preview")
        try:
            flow, _warnings = parse_flow(agent.flow)
        except (FlowValidationError, msgspec.ValidationError) as exc:
            raise ApiError(409, "bad_flow", str(exc)) from None
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE)
        await ws.prepare(call.request)
        sockets = call.request.app[SOCKETS].sockets
        sockets.add(ws)
        runner = FlowRunner(FlowEngine(flow))
        try:
            await _session(ws, runner)
        finally:
            sockets.discard(ws)
            await runner.close()
            await ws.close()
        return ws


async def _session(ws: web.WebSocketResponse, runner: FlowRunner) -> None:
    loop = asyncio.get_running_loop()
    played: list[asyncio.Handle] = []
    done = asyncio.Event()

    def prompt_played() -> None:
        played.clear()
        runner.on_prompt_played()

    async def forward() -> None:
        async for event in runner:
            await ws.send_str(msgspec.json.encode(event).decode())
            if isinstance(event, Say) and not played:
                # One "heard" per batch of says, as a call reports after its audio.
                played.append(loop.call_soon(prompt_played))
            elif isinstance(event, Hangup):
                done.set()
                return

    sender = loop.create_task(forward(), name="preview-out")
    runner.start()
    try:
        while not done.is_set() and not ws.closed:
            receive = loop.create_task(ws.receive())
            finished = loop.create_task(done.wait())
            await asyncio.wait((receive, finished), return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            if not receive.done():
                receive.cancel()
                break
            message = receive.result()
            if message.type is not WSMsgType.TEXT:
                if message.type in (
                    WSMsgType.CLOSE,
                    WSMsgType.CLOSING,
                    WSMsgType.CLOSED,
                    WSMsgType.ERROR,
                ):
                    break
                await ws.send_str(_error("bad_message", "send JSON text messages"))
                continue
            try:
                item = _DECODER.decode(message.data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await ws.send_str(_error("bad_message", str(exc)))
                continue
            await _apply(runner, item, ws)
        if done.is_set():
            await asyncio.wait_for(sender, 1.0)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _apply(runner: FlowRunner, item: Any, ws: web.WebSocketResponse) -> None:
    if isinstance(item, PreviewText):
        runner.on_utterance(item.text[:MAX_TEXT])
    elif isinstance(item, PreviewDtmf):
        if len(item.digit) != 1 or item.digit not in "0123456789*#ABCD":
            await ws.send_str(_error("bad_digit", "a DTMF digit is one of 0-9 * # A-D"))
            return
        runner.on_dtmf(item.digit)
