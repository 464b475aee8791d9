"""Inbound SIP calls: from an INVITE to an agent talking on RTP.

:class:`SipGateway` is the user agent's :class:`~voxgate.sip.ua.InviteHandler`.
For each new INVITE it decides, in this order:

1. the server is draining -> ``503`` (``Retry-After``);
2. the Request-URI user (else the To user) is looked up as a number with or
   without ``+`` (through :class:`~voxgate.server.route_cache.RouteCache`: one
   Redis round trip while nothing changed); unknown, or not a ``sip`` number
   -> ``404``.  A carrier delivering a call to a trunk's registration sends
   it to the Contact we registered, whose user is the trunk id: then the To
   user is the dialled number, and it must belong to the trunk's tenant.  An
   INVITE from a source listed in a trunk's ``inbound_sources`` is that
   tenant's carrier: the number must be the tenant's, and the tenant's ACL
   does not apply (trunks are read from a snapshot at most ``TRUNKS_TTL`` old);
3. the tenant is not active -> ``403``;
4. the tenant's inbound ACL (:mod:`voxgate.tenants.sip_acl`): a source outside
   its networks -> ``403``; with a digest user, no/invalid credentials ->
   ``401`` with a challenge (a stale nonce is re-challenged with ``stale=true``);
5. admission (``CallControl.admit``: concurrency and calls per second) ->
   ``503`` with ``Retry-After``;
6. an RTP port pair (none free -> ``503``) and SDP offer/answer (nothing in
   common -> ``488``; an INVITE without an offer -> ``488``).

Then it rings (``180``), answers ``200`` with the SDP answer after
``ring_seconds`` (a CANCEL meanwhile gets ``487``) and runs the agent
(``AgentHost``) on a :class:`SipMediaChannel` through the shared
:class:`~voxgate.server.call_lifecycle.CallLifecycle` (registry, record,
ending, admission slot freed); the SIP leg adds the RTCP statistics to the
record as a ``rtp_stats`` call event.

The gateway is also the orchestrator's
:class:`~voxgate.server.outbound.TrunkDialer`: :meth:`SipGateway.dial` sends
the INVITE through a trunk (its servers in failover order, its transport,
digest credentials from its secret, From = the caller ID), and on answer runs
the agent exactly as for an inbound call; :meth:`SipGateway.blind_transfer`
REFERs a live SIP call (either direction) to a number and hangs up our leg
once the transfer took.

:func:`start_sip` opens the UDP and TCP listeners and returns a
:class:`SipListener` the server's listener seam understands.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import socket
import time

import msgspec

from voxgate.media.call import Call as MediaCall
from voxgate.media.call import CallEvent, EndReason
from voxgate.media.channel import CallAgent
from voxgate.server.agent_host import FallbackAgent
from voxgate.server.call_control import Admission, CallRuntime
from voxgate.server.call_lifecycle import CallLifecycle
from voxgate.server.config import Config
from voxgate.server.outbound import TrunkDial
from voxgate.server.route_cache import RouteCache
from voxgate.server.services import Services
from voxgate.sip.channel import SipMediaChannel
from voxgate.sip.digest import DigestClient, DigestServer, DigestVerdict, parse_credentials
from voxgate.sip.errors import DigestError, SipUsageError
from voxgate.sip.ports import PortsExhausted, RtpPortAllocator
from voxgate.sip.rtp_session import RtpSession, RtpSessionConfig
from voxgate.sip.rtp_transport import RtpBindError, RtpClock, RtpEndpoint
from voxgate.sip.sdp import SdpError, SdpSession, SessionDescription, parse_sdp
from voxgate.sip.transaction import Address, Transport
from voxgate.sip.transport import SipTransports
from voxgate.sip.ua import (
    CallFailed,
    IncomingInvite,
    OutboundInvite,
    ReferFailed,
    Session,
    SessionEnd,
    UserAgent,
)
from voxgate.sip.uri import SipUri
from voxgate.tenants.errors import NotFound, StoreUnavailable, TenantsError
from voxgate.tenants.models import Agent
from voxgate.tenants.sip_acl import SECRET_NAME, SipAcl, SipAclStore, source_allowed
from voxgate.tenants.trunks import Trunk, TrunkStore

__all__ = ["SipGateway", "SipListener", "TransferUnavailable", "dial_user", "start_sip"]

log = logging.getLogger("voxgate.sip")

AGENT_STOP_TIMEOUT = 5.0
# How long an outbound call may ring before we CANCEL it.
RING_TIMEOUT = 60.0
# How long a transferred call waits for the far end's NOTIFY with the outcome.
TRANSFER_OUTCOME_TIMEOUT = 30.0
# Trunk list snapshot age for inbound routing (trunks change rarely; INVITEs often).
TRUNKS_TTL = 5.0
# Final answers after which the next server of a trunk is worth a try.
_FAILOVER_STATUSES = frozenset({408, 480, 500, 502, 503, 504})
_TRUNK_ID_PREFIX = "trk_"


class TransferUnavailable(Exception):
    """The call cannot be transferred (not a live SIP call of this process)."""


class _Relay:
    """Session listener of an outbound INVITE until its media channel exists.

    The user agent needs a listener when the INVITE goes out, but the RTP
    session can only be built from the answer; this forwards to the channel
    once it is attached and remembers an end that came before.
    """

    def __init__(self) -> None:
        self.channel: SipMediaChannel | None = None
        self.ended: SessionEnd | None = None

    def attach(self, channel: SipMediaChannel, session: Session) -> None:
        self.channel = channel
        if self.ended is not None:
            channel.session_ended(session, self.ended)

    def session_confirmed(self, session: Session) -> None:
        if self.channel is not None:
            self.channel.session_confirmed(session)

    def session_reoffer(self, session: Session, offer: SessionDescription) -> bytes:
        if self.channel is None:
            raise SdpError("media not ready")
        return self.channel.session_reoffer(session, offer)

    def session_dtmf(self, session: Session, digit: str, duration: float) -> None:
        if self.channel is not None:
            self.channel.session_dtmf(session, digit, duration)

    def session_ended(self, session: Session, reason: SessionEnd) -> None:
        if self.channel is not None:
            self.channel.session_ended(session, reason)
        else:
            self.ended = reason


class _SipLeg:
    """A SIP call's side of its :class:`~voxgate.server.call_lifecycle.CallLifecycle`."""

    def __init__(self, channel: SipMediaChannel, session: Session) -> None:
        self.channel = channel
        self.session = session

    async def serve(self) -> None:
        # RTP runs on the RTP clock and signalling in the user agent: the
        # call is carried until its dialog ends.
        await self.session.ended.wait()

    def abort(self) -> None:
        self.channel.abort(EndReason.ERROR)  # ends without signalling, as a failed leg

    async def close(self) -> list[CallEvent]:
        # However the channel closed, its RTP stops and its ports go back now.
        self.channel.abort(EndReason.ERROR)
        stats = self.channel.stats
        if stats is None:
            return []
        return [CallEvent(time.time(), "rtp_stats", msgspec.json.encode(stats).decode())]


def dial_user(trunk: Trunk, number: str) -> str:
    """The Request-URI user for ``number`` (+E.164) on ``trunk``.

    voip.ms routes North American numbers as ``1NPANXXXXXX`` and others with
    the ``011`` international prefix; other carriers get the E.164 form.
    """
    if trunk.preset != "voipms":
        return number
    digits = number.removeprefix("+")
    return digits if number.startswith("+1") else "011" + digits


_RETRY_AFTER = {
    Admission.BUSY_CPS: "1",
    Admission.BUSY_CONCURRENCY: "10",
    Admission.DRAINING: "30",
}


class SipGateway:
    """Routes inbound INVITEs to tenants' agents (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        runtime: CallRuntime,
        *,
        media_host: str,
        rtp_ports: RtpPortAllocator,
        rtp_clock: RtpClock,
        ring_seconds: float = 0.25,
        rtp_config: RtpSessionConfig | None = None,
        digest_secret: bytes | None = None,
    ) -> None:
        self.services = services
        self.runtime = runtime
        self.media_host = media_host
        self.rtp_ports = rtp_ports
        self.rtp_clock = rtp_clock
        self.ring_seconds = ring_seconds
        self.rtp_config = rtp_config or RtpSessionConfig()
        self.acls = SipAclStore(services.store)
        # One audit-id round trip per INVITE instead of five or six lookups.
        self.routes = RouteCache(services, self.acls)
        self._routed_agents: dict[str, Agent | None] = {}
        self.lifecycle = CallLifecycle(runtime, agent_stop_timeout=AGENT_STOP_TIMEOUT)
        self.digest = DigestServer(secret=digest_secret or secrets.token_bytes(32), realm="voxgate")
        self._calls: dict[str, asyncio.Task[None]] = {}
        self.draining = False
        self.rejected: dict[int, int] = {}
        self.trunks = TrunkStore(services.store, services.secrets)
        self._trunk_snapshot: tuple[float, list[tuple[str, Trunk]]] | None = None
        # Set once the user agent exists (start_sip); dial() needs it.
        self.ua: UserAgent | None = None

    # ------------------------------------------------------------------ decisions

    def _reject(
        self,
        invite: IncomingInvite,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + 1
        invite.reject(status, reason, headers or [])

    @property
    def is_draining(self) -> bool:
        """True once no new calls are taken."""
        return self.draining or self.services.status.draining or self.runtime.control.draining

    async def handle_invite(self, invite: IncomingInvite) -> None:
        if self.is_draining:
            self._reject(
                invite, 503, "Draining", [("Retry-After", _RETRY_AFTER[Admission.DRAINING])]
            )
            return
        try:
            number, via_trunk, trusted = await self._called_number(invite)
            route = await self.routes.lookup(number) if number else None
        except (NotFound, StoreUnavailable):
            self._reject(invite, 503, headers=[("Retry-After", "5")])
            return
        if route is None or route.number.provider != "sip":
            self._reject(invite, 404)
            return
        tenant, mapping = route.tenant, route.number
        tenant_id = tenant.id
        if via_trunk is not None and via_trunk != tenant_id:
            # A trunk only delivers its own tenant's numbers.
            self._reject(invite, 404)
            return
        try:
            if tenant.status != "active":
                self._reject(invite, 403, "Tenant Suspended")
                return
            if not trusted and not await self._acl_allows(invite, tenant_id, route.acl):
                return
        except (NotFound, StoreUnavailable):
            self._reject(invite, 503, headers=[("Retry-After", "5")])
            return
        if invite.offer is None:
            self._reject(invite, 488, "Offer Required")
            return
        call_id = "sip_" + secrets.token_hex(12)
        admission = self.runtime.control.admit(
            tenant_id, mapping.agent_id, "sip", call_id, tenant.quotas
        )
        if admission is not Admission.ADMITTED:
            reason = "Draining" if admission is Admission.DRAINING else "Over Quota"
            self._reject(invite, 503, reason, [("Retry-After", _RETRY_AFTER[admission])])
            return
        self._routed_agents[call_id] = route.agent
        try:
            await self._connect(invite, tenant_id, mapping.agent_id, call_id)
        finally:
            self._routed_agents.pop(call_id, None)
            if not invite.answered or invite.is_cancelled:
                self.runtime.control.release(call_id)

    async def _trunk_list(self) -> list[tuple[str, Trunk]]:
        now = time.monotonic()
        snapshot = self._trunk_snapshot
        if snapshot is None or snapshot[0] <= now:
            try:
                trunks = [(t, k) for t, k in await self.trunks.all() if k.enabled]
            except TenantsError as exc:
                raise StoreUnavailable(str(exc)) from None
            snapshot = (now + TRUNKS_TTL, trunks)
            self._trunk_snapshot = snapshot
        return snapshot[1]

    async def _called_number(self, invite: IncomingInvite) -> tuple[str | None, str | None, bool]:
        """``(number, tenant the call must belong to, source trusted)`` of an INVITE."""
        user = invite.called_user
        trunks = await self._trunk_list()
        if not trunks:
            return user, None, False
        restricted: str | None = None
        number = user
        if user is not None and user.startswith(_TRUNK_ID_PREFIX):
            for tenant_id, trunk in trunks:
                if trunk.id == user:
                    to = invite.request.to_addr.uri
                    number = to.user if isinstance(to, SipUri) else None
                    restricted = tenant_id
                    break
        try:
            ip = ipaddress.ip_address(invite.source[0])
        except ValueError:
            return number, restricted, False
        for tenant_id, trunk in trunks:
            if restricted is not None and restricted != tenant_id:
                continue
            for network in trunk.inbound_sources:
                if ip in ipaddress.ip_network(network, strict=False):
                    return number, tenant_id, True
        return number, restricted, False

    async def _acl_allows(self, invite: IncomingInvite, tenant_id: str, acl: SipAcl) -> bool:
        if not acl.restricts:
            return True
        if not source_allowed(acl, invite.source[0]):
            self._reject(invite, 403)
            return False
        if acl.username is None:
            return True
        secret = await self.services.secrets.get(tenant_id, SECRET_NAME)
        password = secret.get("password") if secret else None
        header = invite.request.headers.get("Authorization")
        now = time.time()
        stale = False
        if header is not None and isinstance(password, str):
            try:
                credentials = parse_credentials(header)
            except DigestError:
                self._reject(invite, 400, "Bad Authorization")
                return False
            if credentials.username == acl.username:
                verdict = self.digest.verify(credentials, "INVITE", password=password, now=now)
                if verdict is DigestVerdict.ACCEPTED:
                    return True
                stale = verdict is DigestVerdict.STALE
        challenges = self.digest.challenges(now, stale=stale)
        self._reject(invite, 401, headers=[("WWW-Authenticate", c) for c in challenges])
        return False

    # ------------------------------------------------------------------ the call

    async def _agent_for(self, tenant_id: str, agent_id: str, call: MediaCall) -> CallAgent:
        agent: Agent | None
        if call.call_id in self._routed_agents:
            # Read with the route this INVITE was admitted on, moments ago.
            agent = self._routed_agents.pop(call.call_id)
        else:
            try:
                agent = await self.services.agents.get(tenant_id, agent_id)
            except (NotFound, StoreUnavailable):
                agent = None
        if agent is None or agent.id != agent_id:
            return FallbackAgent("agent no longer exists")
        return self.runtime.agents.create(agent, call)

    async def _connect(
        self, invite: IncomingInvite, tenant_id: str, agent_id: str, call_id: str
    ) -> None:
        try:
            endpoint = await RtpEndpoint.open(self.rtp_ports, self.media_host)
        except (PortsExhausted, RtpBindError):
            log.warning("no RTP port pair for a new call")
            self._reject(invite, 503, "No Media Ports", [("Retry-After", "5")])
            return
        try:
            sdp = SdpSession(self.media_host, endpoint.port)
            assert invite.offer is not None  # checked by the caller
            try:
                answer, params = sdp.answer(invite.offer)
            except SdpError:
                self._reject(invite, 488)
                return
            wall = time.time()
            call = MediaCall(
                call_id,
                tenant_id=tenant_id,
                agent_id=agent_id,
                provider="sip",
                from_number=invite.caller_user[:64],
                to_number=(invite.called_user or "")[:64],
                now=wall,
            )
            agent = await self._agent_for(tenant_id, agent_id, call)
            invite.ring()
            if self.ring_seconds > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.ring_seconds):
                        await invite.cancelled.wait()
            if invite.is_cancelled or self.is_draining:
                if not invite.is_cancelled:
                    self._reject(invite, 503, "Draining", [("Retry-After", "30")])
                call.closed(time.time(), EndReason.CANCELLED)
                return
            rtp = RtpSession(params, now=time.monotonic(), config=self.rtp_config)
            channel = SipMediaChannel(call, self.runtime.clock, self.rtp_clock, endpoint, rtp, sdp)
            session = invite.answer(answer.to_bytes(), channel)
        except BaseException:
            endpoint.close()
            raise
        call.answer(time.time())
        channel.start(session)
        task = asyncio.get_running_loop().create_task(
            self.lifecycle.run(channel, agent, _SipLeg(channel, session)),
            name=f"sip-call-{call_id}",
        )
        self._calls[call_id] = task
        task.add_done_callback(lambda _t: self._calls.pop(call_id, None))

    # ------------------------------------------------------------------ outbound

    async def dial(self, request: TrunkDial) -> None:
        """Place a trunk call and run it to its end (``TrunkDialer``).

        Raises :class:`~voxgate.sip.ua.CallFailed` when no server of the trunk
        answered the call (the last failure), before any media ran.
        """
        if self.is_draining:
            raise CallFailed(503, "Draining")
        if self.ua is None:
            raise CallFailed(503, "SIP Not Started")
        try:
            endpoint = await RtpEndpoint.open(self.rtp_ports, self.media_host)
        except (PortsExhausted, RtpBindError):
            raise CallFailed(503, "No Media Ports") from None
        relay = _Relay()
        sdp = SdpSession(self.media_host, endpoint.port)
        try:
            session = await self._invite_trunk(request, sdp.create_offer().to_bytes(), relay)
            try:
                params = sdp.process_answer(parse_sdp(session.remote_sdp))
            except SdpError as exc:
                await session.hangup()
                raise CallFailed(488, f"Unusable SDP Answer: {exc}") from None
        except BaseException:
            endpoint.close()
            raise
        wall = time.time()
        call = MediaCall(
            request.call_id,
            tenant_id=request.tenant_id,
            agent_id=request.agent_id,
            provider="sip",
            from_number=(request.from_ or "")[:64],
            to_number=request.to[:64],
            now=wall,
        )
        rtp = RtpSession(params, now=time.monotonic(), config=self.rtp_config)
        channel = SipMediaChannel(call, self.runtime.clock, self.rtp_clock, endpoint, rtp, sdp)
        call.answer(time.time())
        channel.start(session)
        relay.attach(channel, session)
        task = asyncio.current_task()
        if task is not None:
            self._calls[call.call_id] = task
        try:
            await self.lifecycle.run(
                channel,
                self._agent_for(request.tenant_id, request.agent_id, call),
                _SipLeg(channel, session),
                direction="outbound",
            )
        finally:
            self._calls.pop(call.call_id, None)

    async def _trunk_servers(self, trunk: Trunk, transport: Transport) -> list[tuple[str, Address]]:
        """``(host as configured, resolved address)`` per server, in failover order."""
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_STREAM if transport is Transport.TCP else socket.SOCK_DGRAM
        found: list[tuple[str, Address]] = []
        for host, port in trunk.host_ports():
            try:
                infos = await loop.getaddrinfo(host, port, type=kind)
            except OSError as exc:
                log.info("trunk %s: cannot resolve %s: %s", trunk.id, host, exc)
                continue
            if infos:
                found.append((host, (str(infos[0][4][0]), port)))
        return found

    async def _invite_trunk(self, request: TrunkDial, offer: bytes, relay: _Relay) -> Session:
        ua = self.ua
        assert ua is not None  # checked by dial()
        trunk = request.trunk
        transport = Transport.TCP if trunk.transport == "tcp" else Transport.UDP
        creds = request.credentials
        caller = request.from_
        if caller is not None and trunk.preset == "voipms":
            caller = caller.removeprefix("+")
        from_user = caller or (creds.username if creds is not None else "voxgate")
        failure = CallFailed(503, "No Trunk Server")
        for host, address in await self._trunk_servers(trunk, transport):
            port = address[1]
            target = SipUri(
                host=f"[{host}]" if ":" in host else host,
                port=None if port == 5060 else port,
                user=dial_user(trunk, request.to),
                params={"transport": "tcp"} if transport is Transport.TCP else {},
            )
            pending: list[OutboundInvite] = []
            try:
                return await ua.invite(
                    target,
                    address,
                    sdp=offer,
                    listener=relay,
                    transport=transport,
                    from_user=from_user,
                    credentials=DigestClient(creds.username, creds.password) if creds else None,
                    answer_timeout=RING_TIMEOUT,
                    on_progress=pending.append,
                )
            except asyncio.CancelledError:
                for outbound in pending:
                    outbound.cancel()  # the call was withdrawn while ringing
                raise
            except CallFailed as exc:
                failure = exc
                if exc.status not in _FAILOVER_STATUSES:
                    raise
                log.info("trunk %s: %s answered %s; next server", trunk.id, host, exc)
            except (OSError, SipUsageError) as exc:
                failure = CallFailed(503, f"Transport Error: {exc}")
        raise failure

    async def blind_transfer(self, call_id: str, target: str) -> None:
        """REFER the live call ``call_id`` to ``target``; hang up our leg once it took.

        Raises :class:`TransferUnavailable` or :class:`~voxgate.sip.ua.ReferFailed`
        (the call then goes on, so the flow can take its fallback).
        """
        live = self.runtime.control.get(call_id)
        channel = live.channel if live is not None else None
        if not isinstance(channel, SipMediaChannel) or channel.session is None:
            raise TransferUnavailable("not a live SIP call of this server")
        session = channel.session
        if session.is_ended or channel.closed:
            raise TransferUnavailable("the call has ended")
        peer = session.dialog.remote_target
        if not isinstance(peer, SipUri):
            raise TransferUnavailable("the peer has no SIP address")
        refer_to = SipUri(host=peer.host, port=peer.port, user=target)
        channel.call.record(time.time(), "transfer_requested", target)
        try:
            await session.refer(refer_to, outcome_timeout=TRANSFER_OUTCOME_TIMEOUT)
        except ReferFailed as exc:
            channel.call.record(time.time(), "transfer_failed", str(exc))
            raise
        channel.call.record(time.time(), "transferred", target)
        if not channel.closed:
            await channel.hangup(EndReason.TRANSFER)

    @property
    def live_calls(self) -> int:
        """Calls this gateway is running."""
        return len(self._calls)

    async def wait_idle(self) -> None:
        """Wait until every call has ended."""
        while self._calls:
            await asyncio.gather(*list(self._calls.values()), return_exceptions=True)

    async def drain(self, seconds: float) -> None:
        """Refuse new calls (503) and give live calls up to ``seconds`` to end."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wait_idle()


class SipListener:
    """The SIP side of one server: transports, user agent, RTP clock, gateway."""

    def __init__(
        self,
        transports: SipTransports,
        ua: UserAgent,
        gateway: SipGateway,
        rtp_clock_task: asyncio.Task[None],
        host: str,
    ) -> None:
        self.transports = transports
        self.ua = ua
        self.gateway = gateway
        self._rtp_clock_task = rtp_clock_task
        self._host = host

    @property
    def endpoints(self) -> dict[str, str]:
        """Ready-file entries ``sip_udp`` and ``sip_tcp``."""
        out: dict[str, str] = {}
        for key, kind in (("sip_udp", Transport.UDP), ("sip_tcp", Transport.TCP)):
            address = self.transports.local_address(kind)
            if address is not None:
                host = f"[{self._host}]" if ":" in self._host else self._host
                out[key] = f"{host}:{address[1]}"
        return out

    async def drain(self, seconds: float) -> None:
        """New INVITEs get 503 from now on; live calls get ``seconds`` to end."""
        await self.gateway.drain(seconds)

    async def close(self) -> None:
        """Hang up what is left, stop the clock, close the sockets."""
        self.gateway.draining = True
        for session in self.ua.sessions:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await session.hangup()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.gateway.wait_idle()
        self._rtp_clock_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._rtp_clock_task
        await self.ua.close()
        await self.transports.close()


def _ring_seconds() -> float:
    # Operators (and benchmarks) may answer at once; by default we ring briefly
    # so a caller's CANCEL right after 180 still finds the INVITE unanswered.
    raw = os.environ.get("VOXGATE_SIP_RING_SECONDS")
    try:
        return max(0.0, min(float(raw), 30.0)) if raw else 0.25
    except ValueError:
        return 0.25


PORT_ZERO_ATTEMPTS = 8


async def start_sip(
    config: Config,
    services: Services,
    runtime: CallRuntime,
    *,
    ring_seconds: float | None = None,
) -> SipListener:
    """Listen for SIP on ``config.host:config.sip_port`` (UDP and TCP; 0 = a free port)."""
    # With port 0 the free UDP port may be taken for TCP: then try another one.
    attempts = PORT_ZERO_ATTEMPTS if config.sip_port == 0 else 1
    for attempt in range(attempts):
        transports = SipTransports()
        try:
            address = await transports.listen_udp(config.host, config.sip_port)
            # TCP on the same port number as UDP, as SIP expects of one address.
            await transports.listen_tcp(config.host, address[1])
            break
        except OSError as exc:
            await transports.close()
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
    rtp_clock = RtpClock()
    gateway = SipGateway(
        services,
        runtime,
        media_host=config.host,
        rtp_ports=RtpPortAllocator(*config.rtp_ports),
        rtp_clock=rtp_clock,
        ring_seconds=_ring_seconds() if ring_seconds is None else ring_seconds,
    )
    ua = UserAgent(transports, gateway, advertised_host=config.host)
    gateway.ua = ua
    task = asyncio.get_running_loop().create_task(rtp_clock.run(), name="voxgate-rtp-clock")
    return SipListener(transports, ua, gateway, task, config.host)
