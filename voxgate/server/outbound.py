"""Outbound calls and transfers: one orchestrator for the API, campaigns and flows.

:meth:`Orchestrator.make_call` places a call from one of a tenant's agents:

1. the toll-fraud guard (:class:`~voxgate.tenants.dial_policy.DialPolicies`)
   checks the destination first; a refusal is audited and raised as
   :class:`DialRefused`;
2. the tenant must be active, the agent must exist, and admission control
   (``max_concurrent_calls`` / ``max_cps``) must let the call in;
3. ``via="twilio"``: the Calls REST API is asked to run ``<Connect><Stream>``
   TwiML with a one-time call token, exactly the grant the inbound webhook
   issues, so the media socket attaches the agent the same way;
   ``via="trunk:<id>"``: the trunk's first enabled server gets an INVITE with
   digest credentials from the trunk's secret, through a :class:`TrunkDialer`
   (the SIP gateway), which answers media and attaches the agent like an
   inbound SIP call;
4. a call record is written (provider ``twilio`` or ``sip``, direction
   ``outbound``).

:meth:`Orchestrator.transfer` serves the flow engine's ``transfer`` action:
a target name is first mapped to the tenant's number for it (a number passes
as is); the destination then passes the same guard (purpose ``transfer``); a Twilio call
gets its TwiML replaced with ``<Dial>`` (the agent's stream ends, Twilio
bridges the caller to the target); a SIP call is handed to the dialer's
blind transfer (REFER).  What the dialer cannot do raises
:class:`TransferFailed` so the flow can take its fallback branch.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import msgspec

from voxgate.server.call_control import Admission, CallControl
from voxgate.server.routes_twilio import StreamGrant, issue_stream_token
from voxgate.server.services import Services
from voxgate.server.twilio_rest import (
    TwilioCredentials,
    TwilioError,
    TwilioRest,
    dial_twiml,
    stream_twiml,
)
from voxgate.tenants.calls import CallRecord, CallRecords
from voxgate.tenants.dial_policy import DialPolicies, Refused
from voxgate.tenants.errors import InvalidInput, NotFound, TenantsError
from voxgate.tenants.ids import new_id
from voxgate.tenants.models import Quotas
from voxgate.tenants.transfer_targets import TransferTargetStore, UnknownTransferTarget
from voxgate.tenants.trunks import Trunk, TrunkCredentials, TrunkStore

log = logging.getLogger("voxgate.outbound")

# Twilio dials, rings (up to its 60 s default) and only then opens the stream.
OUTBOUND_TOKEN_TTL = 120

__all__ = [
    "CallRefused",
    "DialRefused",
    "GrantIssuer",
    "Orchestrator",
    "OutboundCall",
    "OutboundError",
    "ProviderError",
    "TransferFailed",
    "TrunkDial",
    "TrunkDialer",
    "redis_grant_issuer",
]


class OutboundError(Exception):
    """Base of outbound failures; ``code`` is stable for HTTP bodies."""

    code = "outbound_error"
    status = 502

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DialRefused(OutboundError):
    """The toll-fraud guard refused the destination (already audited)."""

    code = "dial_refused"
    status = 403

    def __init__(self, verdict: Refused) -> None:
        super().__init__(verdict.message)
        self.reason = verdict.reason


class CallRefused(OutboundError):
    """Admission control or tenant state does not allow another call now."""

    code = "busy"
    status = 503


class ProviderError(OutboundError):
    """Twilio or the trunk could not take the call (credentials, outage...)."""

    code = "provider_error"
    status = 502


class TransferFailed(OutboundError):
    """The transfer could not be carried out; the flow should take its fallback."""

    code = "transfer_failed"
    status = 409


class OutboundCall(msgspec.Struct, kw_only=True):
    """What ``make_call`` returns (and ``POST …/calls`` answers)."""

    id: str
    status: str
    provider: Literal["twilio", "sip"]
    via: str
    to: str
    from_: str | None = msgspec.field(name="from", default=None)
    agent_id: str


@dataclass(frozen=True, slots=True)
class TrunkDial:
    """Everything the SIP side needs to place one trunk call."""

    call_id: str
    tenant_id: str
    agent_id: str
    to: str  # +E.164
    from_: str | None  # caller ID (+E.164) or None
    trunk: Trunk
    credentials: TrunkCredentials | None


class TrunkDialer(Protocol):
    """Implemented by the SIP gateway: INVITE through a trunk, media, agent attach."""

    async def dial(self, request: TrunkDial) -> None:
        """Place the call and run it to its end; raise on setup failure."""

    async def blind_transfer(self, call_id: str, target: str) -> None:
        """REFER the live SIP call ``call_id`` to ``target`` (+E.164); raise if impossible."""


# Stores a one-time media-stream token's grant (the Twilio path).
GrantIssuer = Callable[[str, StreamGrant], Awaitable[None]]


def redis_grant_issuer(services: Services) -> GrantIssuer:
    """Store grants exactly where the Twilio media socket redeems them."""

    async def issue(token: str, grant: StreamGrant) -> None:
        await issue_stream_token(services, token, grant, OUTBOUND_TOKEN_TTL)

    return issue


class Orchestrator:
    """Outbound calls and transfers for every tenant; see the module docstring."""

    def __init__(
        self,
        services: Services,
        control: CallControl,
        records: CallRecords,
        *,
        twilio: TwilioRest | None = None,
        public_url: str | None = None,
        dialer: TrunkDialer | None = None,
        issue_grant: GrantIssuer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._services = services
        self._policies = DialPolicies(services.store, services.numbers)
        self._trunks = TrunkStore(services.store, services.secrets)
        self._targets = TransferTargetStore(services.store)
        self._records = records
        self._control = control
        self.twilio = twilio
        self._public_url = public_url
        self.dialer = dialer
        self._issue_grant = issue_grant or redis_grant_issuer(services)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        # call id -> provider, for transfers of calls this process placed
        self._providers: dict[str, Literal["twilio", "sip"]] = {}

    async def _agent_exists(self, tenant_id: str, agent_id: str) -> bool:
        try:
            await self._services.agents.get(tenant_id, agent_id)
        except NotFound:
            return False
        return True

    async def _twilio_secret(self, tenant_id: str) -> dict[str, object] | None:
        return await self._services.secrets.get(tenant_id, "twilio")

    # ------------------------------------------------------------------ calls

    async def make_call(
        self,
        tenant_id: str,
        to: str,
        agent_id: str,
        via: str,
        from_: str | None = None,
        *,
        actor: str = "system",
    ) -> OutboundCall:
        """Place a call from ``agent_id`` to ``to`` via ``"twilio"`` or ``"trunk:<id>"``."""
        verdict = await self._policies.check(tenant_id, to, actor=actor, purpose="call")
        if isinstance(verdict, Refused):
            raise DialRefused(verdict)
        number = verdict.number
        trunk: Trunk | None = None
        if via.startswith("trunk:"):
            try:
                trunk = await self._trunks.get(tenant_id, via.removeprefix("trunk:"))
            except NotFound:
                raise InvalidInput("no such trunk", "$.via") from None
            if not trunk.enabled:
                raise InvalidInput("the trunk is disabled", "$.via")
        elif via != "twilio":
            raise InvalidInput('via must be "twilio" or "trunk:<id>"', "$.via")
        if not await self._agent_exists(tenant_id, agent_id):
            raise InvalidInput("no such agent", "$.agent_id")
        tenant = await self._services.registry.get(tenant_id)
        quotas = tenant.quotas
        if tenant.status != "active":
            raise CallRefused("the tenant is suspended")
        if trunk is not None:
            return await self._call_trunk(tenant_id, number, agent_id, trunk, from_, quotas)
        return await self._call_twilio(tenant_id, number, agent_id, from_, quotas)

    def _admit(
        self, tenant_id: str, agent_id: str, provider: str, call_id: str, quotas: Quotas
    ) -> None:
        result = self._control.admit(tenant_id, agent_id, provider, call_id, quotas)
        if result is not Admission.ADMITTED:
            raise CallRefused(f"call not admitted: {result.value}")

    async def _record(self, record: CallRecord, via: str) -> None:
        await self._records.create(record)
        await self._records.append_event(
            record.tenant_id, record.id, "outbound", f"via {via}", at=record.created_at
        )

    async def _call_twilio(
        self, tenant_id: str, to: str, agent_id: str, from_: str | None, quotas: Quotas
    ) -> OutboundCall:
        if self.twilio is None or not self._public_url:
            raise ProviderError("Twilio calls need --public-url and the Twilio REST client")
        secret = await self._twilio_secret(tenant_id)
        if not secret or not isinstance(secret.get("account_sid"), str):
            raise ProviderError("the tenant has no twilio secret")
        creds = TwilioCredentials(
            account_sid=str(secret["account_sid"]), auth_token=str(secret.get("auth_token", ""))
        )
        caller = from_ or (str(secret["from_number"]) if secret.get("from_number") else None)
        if not caller:
            raise InvalidInput("from is required (or from_number in the twilio secret)", "$.from")
        # Admission runs under a provisional id; Twilio names the call only on create.
        provisional = new_id("out")
        self._admit(tenant_id, agent_id, "twilio", provisional, quotas)
        token = secrets.token_urlsafe(24)
        base = urlsplit(self._public_url)
        scheme = "wss" if base.scheme == "https" else "ws"
        stream = f"{scheme}://{base.netloc}{base.path.rstrip('/')}/twilio/media"
        try:
            created = await self.twilio.create_call(
                creds,
                to=to,
                from_=caller,
                twiml=stream_twiml(stream, {"token": token}),
                status_callback=f"{self._public_url.rstrip('/')}/twilio/status",
            )
        except TwilioError as exc:
            self._control.release(provisional)
            raise ProviderError(exc.message) from None
        # Twilio names the call only now: the reservation moves to its id.
        self._control.rekey(provisional, created.sid)
        grant = StreamGrant(
            tenant_id=tenant_id, agent_id=agent_id, call_id=created.sid,
            account_sid=creds.account_sid, from_number=caller, to_number=to,
        )  # fmt: skip
        await self._issue_grant(token, grant)
        now = self._clock()
        await self._record(
            CallRecord(
                id=created.sid, tenant_id=tenant_id, agent_id=agent_id, provider="twilio",
                from_number=caller, to_number=to, status="ringing", created_at=now,
                direction="outbound",
            ),
            "twilio",
        )  # fmt: skip
        self._providers[created.sid] = "twilio"
        return OutboundCall(
            id=created.sid, status="ringing", provider="twilio", via="twilio", to=to,
            from_=caller, agent_id=agent_id,
        )  # fmt: skip

    async def _call_trunk(
        self,
        tenant_id: str,
        to: str,
        agent_id: str,
        trunk: Trunk,
        from_: str | None,
        quotas: Quotas,
    ) -> OutboundCall:
        if self.dialer is None:
            raise ProviderError("SIP is not running in this process")
        credentials = await self._trunks.credentials(tenant_id, trunk.id)
        call_id = new_id("call")
        caller = from_ or trunk.caller_id
        self._admit(tenant_id, agent_id, "sip", call_id, quotas)
        await self._record(
            CallRecord(
                id=call_id, tenant_id=tenant_id, agent_id=agent_id, provider="sip",
                from_number=caller or "", to_number=to, status="ringing",
                created_at=self._clock(), direction="outbound",
            ),
            f"trunk:{trunk.id}",
        )  # fmt: skip
        request = TrunkDial(
            call_id=call_id,
            tenant_id=tenant_id,
            agent_id=agent_id,
            to=to,
            from_=caller,
            trunk=trunk,
            credentials=credentials,
        )
        self._providers[call_id] = "sip"
        task = asyncio.get_running_loop().create_task(self._run_dial(request), name=call_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return OutboundCall(
            id=call_id, status="ringing", provider="sip", via=f"trunk:{trunk.id}", to=to,
            from_=caller, agent_id=agent_id,
        )  # fmt: skip

    async def _run_dial(self, request: TrunkDial) -> None:
        assert self.dialer is not None  # checked before the task was started
        try:
            await self.dialer.dial(request)
        except Exception as exc:
            log.info("outbound call %s failed: %s", request.call_id, exc)
            self._control.release(request.call_id)
            try:
                await self._records.update(
                    request.tenant_id, request.call_id, status="failed",
                    ended_at=self._clock(), end_reason=str(exc)[:200] or "failed",
                )  # fmt: skip
            except TenantsError:
                log.warning("could not mark call %s failed", request.call_id)
        finally:
            self._providers.pop(request.call_id, None)

    # ------------------------------------------------------------------ transfers

    async def transfer(
        self,
        tenant_id: str,
        call_id: str,
        target: str,
        *,
        provider: Literal["twilio", "sip"] | None = None,
        actor: str = "flow",
    ) -> str:
        """Blind-transfer a live call to ``target``; returns the dialled +E.164 number.

        ``target`` is a number or the name of one of the tenant's transfer targets
        (:mod:`voxgate.tenants.transfer_targets`).  Raises :class:`DialRefused`
        (audited) or :class:`TransferFailed`.
        """
        try:
            destination = await self._targets.resolve(tenant_id, target)
        except UnknownTransferTarget as exc:
            raise TransferFailed(str(exc)) from None
        verdict = await self._policies.check(
            tenant_id, destination, actor=actor, purpose="transfer"
        )
        if isinstance(verdict, Refused):
            raise DialRefused(verdict)
        kind = provider or self._providers.get(call_id)
        if kind is None:
            try:
                record = await self._records.get(tenant_id, call_id)
            except NotFound:
                raise TransferFailed("no such call") from None
            kind = "twilio" if record.provider == "twilio" else "sip"
        if kind == "twilio":
            await self._transfer_twilio(tenant_id, call_id, verdict.number)
        else:
            if self.dialer is None:
                raise TransferFailed("SIP is not running in this process")
            try:
                await self.dialer.blind_transfer(call_id, verdict.number)
            except Exception as exc:
                raise TransferFailed(f"SIP transfer failed: {exc}") from None
        try:
            await self._records.append_event(
                tenant_id, call_id, "transfer", verdict.number, at=self._clock()
            )
        except TenantsError as exc:  # the transfer happened; only its note is lost
            log.warning("call %s: transfer not recorded: %s", call_id, exc)
        return verdict.number

    async def _transfer_twilio(self, tenant_id: str, call_sid: str, number: str) -> None:
        if self.twilio is None:
            raise TransferFailed("the Twilio REST client is not configured")
        secret = await self._twilio_secret(tenant_id)
        if not secret or not isinstance(secret.get("account_sid"), str):
            raise TransferFailed("the tenant has no twilio secret")
        creds = TwilioCredentials(
            account_sid=str(secret["account_sid"]), auth_token=str(secret.get("auth_token", ""))
        )
        caller = secret.get("from_number")
        try:
            await self.twilio.update_call(
                creds, call_sid, twiml=dial_twiml(number, str(caller) if caller else None)
            )
        except TwilioError as exc:
            raise TransferFailed(exc.message) from None

    async def close(self) -> None:
        """Cancel dial tasks still setting up (their calls end with them)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
