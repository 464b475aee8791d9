"""Tenant API for SIP trunks, the dial policy and outbound calls.

* ``GET/POST …/trunks``, ``GET/PATCH/DELETE …/trunks/{trunk_id}``: trunk CRUD
  with the live registration status (passwords are write-only);
* ``GET/PUT …/dial-policy``: the toll-fraud allowlist;
* ``GET/PUT …/transfer-targets``: names a flow's ``transfer`` node may use
  (``"operator"`` -> ``+1…``), each still subject to the dial policy;
* ``POST …/calls`` ``{"to", "from"?, "agent_id", "via"}``: place a call
  through the :class:`~voxgate.server.outbound.Orchestrator`.

The orchestrator and the registration driver are optional parts of an app
(:data:`OUTBOUND`); without them the trunk and policy routes still work and
``POST …/calls`` answers 503.  :func:`install_outbound` gives every app an
orchestrator at start-up (Twilio calls when ``--public-url`` is set); the SIP
listener adds its trunk dialer and the registration driver when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from voxgate.server.call_control import CALLS
from voxgate.server.errors import ApiError
from voxgate.server.outbound import Orchestrator, OutboundCall, OutboundError
from voxgate.server.registrations import RegistrationDriver
from voxgate.server.routing import Auth, Call, RouteTable
from voxgate.server.state import CONFIG, SERVICES
from voxgate.server.twilio_rest import TwilioRest
from voxgate.sip.registration import RegistrationStatus
from voxgate.tenants.dial_policy import DialPolicies, DialPolicy, DialPolicyView
from voxgate.tenants.models import E164
from voxgate.tenants.transfer_targets import TransferTargets, TransferTargetStore
from voxgate.tenants.trunks import Trunk, TrunkCreate, TrunkStore, TrunkUpdate

BASE = "/tenants/{tenant_id}/api"


@dataclass(slots=True)
class OutboundParts:
    """What the outbound routes use beyond the control-plane services."""

    orchestrator: Orchestrator | None = None
    registrations: RegistrationDriver | None = None


OUTBOUND = web.AppKey("voxgate.outbound", OutboundParts)


def install_outbound(app: web.Application) -> None:
    """Give ``app`` outbound parts; the orchestrator is built when the app starts.

    Needs the call runtime (:func:`~voxgate.server.call_control.install_calls`)
    first.  Parts a test put on the app before start-up are kept.
    """
    app[OUTBOUND] = OutboundParts()
    owned: list[TwilioRest] = []

    async def on_startup(app: web.Application) -> None:
        parts = app[OUTBOUND]
        if parts.orchestrator is not None:
            return
        runtime = app[CALLS]
        public_url = app[CONFIG].public_url
        # The REST client only serves Twilio calls, which need a public URL.
        twilio = TwilioRest.open() if public_url else None
        if twilio is not None:
            owned.append(twilio)
        parts.orchestrator = Orchestrator(
            app[SERVICES], runtime.control, runtime.records, twilio=twilio, public_url=public_url
        )

    async def on_cleanup(app: web.Application) -> None:
        parts = app[OUTBOUND]
        if parts.orchestrator is not None:
            await parts.orchestrator.close()
        for client in owned:
            await client.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)


class TrunkView(msgspec.Struct, kw_only=True):
    """A trunk plus its live registration (null when it does not register here)."""

    trunk: Trunk
    registration: RegistrationStatus | None


class TrunkList(msgspec.Struct, kw_only=True):
    trunks: list[TrunkView]


class CallCreate(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """Body of ``POST …/calls``."""

    to: Annotated[str, Meta(min_length=1, max_length=32, description="Destination number.")]
    agent_id: Annotated[str, Meta(min_length=1, max_length=64)]
    via: Annotated[
        str,
        Meta(pattern=r"^(twilio|trunk:[a-z0-9_]{1,64})$", description='"twilio" or "trunk:<id>"'),
    ]
    from_: E164 | None = None


def _parts(call: Call[Any]) -> OutboundParts:
    return call.request.app.get(OUTBOUND) or OutboundParts()


def _trunks(call: Call[Any]) -> TrunkStore:
    services = call.request.app[SERVICES]
    return TrunkStore(services.store, services.secrets)


def _policies(call: Call[Any]) -> DialPolicies:
    services = call.request.app[SERVICES]
    return DialPolicies(services.store, services.numbers)


def _view(call: Call[Any], trunk: Trunk) -> TrunkView:
    driver = _parts(call).registrations
    status = None if driver is None else driver.status(call.tenant_id, trunk.id)
    return TrunkView(trunk=trunk, registration=status)


async def _resync(call: Call[Any]) -> None:
    driver = _parts(call).registrations
    if driver is not None:
        await driver.sync()


def register(table: RouteTable) -> None:
    """Declare the trunk, dial-policy and outbound-call routes on ``table``."""
    tags = ("trunks",)

    @table.route(
        "GET", f"{BASE}/trunks", auth=Auth.TENANT, response=TrunkList, tags=tags,
        summary="SIP trunks with live registration status",
    )  # fmt: skip
    async def list_trunks(call: Call[None]) -> TrunkList:
        trunks = await _trunks(call).list(call.tenant_id)
        return TrunkList(trunks=[_view(call, t) for t in trunks])

    @table.route(
        "POST", f"{BASE}/trunks", auth=Auth.TENANT, body=TrunkCreate, response=TrunkView,
        status=201, errors=(409,), tags=tags,
        summary="Create a trunk (preset voipms fills POP hosts; password is write-only)",
    )  # fmt: skip
    async def create_trunk(call: Call[TrunkCreate]) -> TrunkView:
        trunk = await _trunks(call).create(call.tenant_id, call.body, call.actor)
        await _resync(call)
        return _view(call, trunk)

    @table.route(
        "GET", f"{BASE}/trunks/{{trunk_id}}", auth=Auth.TENANT, response=TrunkView,
        errors=(404,), tags=tags, summary="One trunk with its live registration status",
    )  # fmt: skip
    async def get_trunk(call: Call[None]) -> TrunkView:
        return _view(call, await _trunks(call).get(call.tenant_id, call.param("trunk_id")))

    @table.route(
        "PATCH", f"{BASE}/trunks/{{trunk_id}}", auth=Auth.TENANT, body=TrunkUpdate,
        response=TrunkView, errors=(404,), tags=tags,
        summary="Change a trunk (re-registers when needed)",
    )  # fmt: skip
    async def update_trunk(call: Call[TrunkUpdate]) -> TrunkView:
        trunk = await _trunks(call).update(
            call.tenant_id, call.param("trunk_id"), call.body, call.actor
        )
        await _resync(call)
        return _view(call, trunk)

    @table.route(
        "DELETE", f"{BASE}/trunks/{{trunk_id}}", auth=Auth.TENANT, status=204, errors=(404,),
        tags=tags, summary="Delete a trunk (unregisters it)",
    )  # fmt: skip
    async def delete_trunk(call: Call[None]) -> None:
        await _trunks(call).delete(call.tenant_id, call.param("trunk_id"), call.actor)
        await _resync(call)

    @table.route(
        "GET", f"{BASE}/dial-policy", auth=Auth.TENANT, response=DialPolicyView, tags=tags,
        summary="Outbound destination rules (toll-fraud guard)",
    )  # fmt: skip
    async def get_dial_policy(call: Call[None]) -> DialPolicyView:
        return await _policies(call).view(call.tenant_id)

    @table.route(
        "PUT", f"{BASE}/dial-policy", auth=Auth.TENANT, body=DialPolicy,
        response=DialPolicyView, tags=tags,
        summary="Replace the outbound destination rules",
    )  # fmt: skip
    async def put_dial_policy(call: Call[DialPolicy]) -> DialPolicyView:
        policies = _policies(call)
        await policies.put(call.tenant_id, call.body, call.actor)
        return await policies.view(call.tenant_id)

    @table.route(
        "GET", f"{BASE}/transfer-targets", auth=Auth.TENANT, response=TransferTargets,
        tags=tags, summary="Named transfer targets of the tenant's flows",
    )  # fmt: skip
    async def get_transfer_targets(call: Call[None]) -> TransferTargets:
        return await TransferTargetStore(call.request.app[SERVICES].store).get(call.tenant_id)

    @table.route(
        "PUT", f"{BASE}/transfer-targets", auth=Auth.TENANT, body=TransferTargets,
        response=TransferTargets, tags=tags,
        summary="Replace the named transfer targets (name -> +E.164 number)",
    )  # fmt: skip
    async def put_transfer_targets(call: Call[TransferTargets]) -> TransferTargets:
        store = TransferTargetStore(call.request.app[SERVICES].store)
        return await store.put(call.tenant_id, call.body, call.actor)

    @table.route(
        "POST", f"{BASE}/calls", auth=Auth.TENANT, body=CallCreate, response=OutboundCall,
        status=201, errors=(403, 404, 502, 503), tags=("calls",),
        summary="Place an outbound call from an agent via Twilio or a trunk",
    )  # fmt: skip
    async def create_call(call: Call[CallCreate]) -> OutboundCall:
        orchestrator = _parts(call).orchestrator
        if orchestrator is None:
            raise ApiError(503, "unavailable", "outbound calls are not enabled on this server")
        body = call.body
        try:
            return await orchestrator.make_call(
                call.tenant_id, body.to, body.agent_id, body.via, body.from_, actor=call.actor
            )
        except OutboundError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
