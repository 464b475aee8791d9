"""Runs one :class:`~voxgate.sip.registration.RegistrationClient` per registering trunk.

The driver owns the I/O the sans-IO client leaves out: it resolves the
registrar's host name, sends each REGISTER in a client transaction of the
SIP user agent (retransmissions and timer F come from there), feeds final
responses back, and sleeps until the client's next timer.  :meth:`sync`
reconciles the running set with the trunk store (new, changed, disabled or
deleted trunks); :meth:`status` feeds the trunk API and ``/system/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voxgate.sip.message import SipRequest, SipResponse
from voxgate.sip.registration import (
    RegistrationClient,
    RegistrationConfig,
    RegistrationStatus,
    RegState,
)
from voxgate.sip.transaction import Address, Transport
from voxgate.sip.ua import UserAgent
from voxgate.tenants.errors import TenantsError
from voxgate.tenants.trunks import Trunk, TrunkStore

log = logging.getLogger("voxgate.registrations")

__all__ = ["RegisterSender", "RegistrationDriver", "UaRegisterSender"]

_UNREGISTER_WAIT = 5.0


class RegisterSender(Protocol):
    """Sends one REGISTER in a client transaction and returns its final response."""

    def local_address(self, transport: Transport) -> Address:
        """The address our Via/Contact advertise for ``transport``."""

    async def send(
        self, request: SipRequest, destination: Address, transport: Transport
    ) -> SipResponse:
        """The final response; a response without Call-ID stands for a timeout."""


class UaRegisterSender:
    """:class:`RegisterSender` over the SIP user agent's transaction layer."""

    def __init__(self, ua: UserAgent) -> None:
        self._ua = ua

    def local_address(self, transport: Transport) -> Address:
        uri = self._ua.contact(transport).sip_uri
        return uri.host, uri.port or 5060

    async def send(
        self, request: SipRequest, destination: Address, transport: Transport
    ) -> SipResponse:
        return await self._ua.send_request(request, destination, transport)


@dataclass(eq=False)
class _Running:
    tenant_id: str
    trunk: Trunk
    client: RegistrationClient
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _transport(trunk: Trunk) -> Transport:
    return Transport.TCP if trunk.transport == "tcp" else Transport.UDP


class RegistrationDriver:
    """Keeps every enabled, registering trunk registered; see the module docstring."""

    def __init__(
        self,
        trunks: TrunkStore,
        sender: RegisterSender,
        *,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        tune: Callable[[RegistrationConfig], RegistrationConfig] | None = None,
    ) -> None:
        self._trunks = trunks
        self._sender = sender
        self._clock = clock or asyncio.get_running_loop().time
        self._rng = rng or random.Random()
        self._tune = tune
        self._running: dict[tuple[str, str], _Running] = {}
        # Set whenever a client changes state (tests and status feeds wait on it).
        self.changed = asyncio.Condition()

    def status(self, tenant_id: str, trunk_id: str) -> RegistrationStatus | None:
        """Live status of one trunk's registration; None when it does not register."""
        running = self._running.get((tenant_id, trunk_id))
        return None if running is None else running.client.status(self._clock())

    def statuses(self) -> list[tuple[str, str, RegistrationStatus]]:
        """``(tenant id, trunk id, status)`` of every running registration."""
        now = self._clock()
        return [(t, k, r.client.status(now)) for (t, k), r in self._running.items()]

    async def sync(self) -> None:
        """Start, restart or stop registrations to match the trunk store."""
        try:
            wanted = {
                (tenant_id, trunk.id): (tenant_id, trunk)
                for tenant_id, trunk in await self._trunks.all()
                if trunk.enabled and trunk.register
            }
        except TenantsError as exc:
            log.warning("cannot read trunks: %s", exc)
            return
        for key, running in list(self._running.items()):
            current = wanted.get(key)
            if current is None or current[1] != running.trunk:
                await self._stop(key)
        for key, (tenant_id, trunk) in wanted.items():
            if key not in self._running:
                await self._start(tenant_id, trunk)

    async def _start(self, tenant_id: str, trunk: Trunk) -> None:
        try:
            creds = await self._trunks.credentials(tenant_id, trunk.id)
        except TenantsError as exc:
            log.warning("trunk %s: no credentials: %s", trunk.id, exc)
            return
        if creds is None:
            return
        transport = _transport(trunk)
        config = RegistrationConfig(
            hosts=tuple(trunk.host_ports()),
            username=creds.username,
            password=creds.password,
            transport=transport,
            expires=trunk.register_expires,
            contact_user=trunk.id,
        )
        if self._tune is not None:
            config = self._tune(config)
        client = RegistrationClient(config, self._sender.local_address(transport), rng=self._rng)
        running = _Running(tenant_id, trunk, client)
        self._running[(tenant_id, trunk.id)] = running
        running.task = asyncio.get_running_loop().create_task(
            self._run(running), name=f"register-{trunk.id}"
        )

    async def _stop(self, key: tuple[str, str]) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return
        task = running.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client = running.client
        client.unregister(self._clock())
        if client.state is RegState.UNREGISTERING:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_UNREGISTER_WAIT):
                    await self._exchange(client)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _exchange(self, client: RegistrationClient) -> None:
        for _ in range(16):  # bounded: each round answers the previous response
            requests = client.take_requests()
            if not requests:
                return
            for item in requests:
                await self._send_one(client, item.request, item.destination, item.transport)

    async def _send_one(
        self,
        client: RegistrationClient,
        request: SipRequest,
        destination: Address,
        transport: Transport,
    ) -> None:
        host, port = destination
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host,
                port,
                type=socket.SOCK_DGRAM if transport is Transport.UDP else socket.SOCK_STREAM,
            )
            address = (str(infos[0][4][0]), port)
        except (OSError, IndexError) as exc:
            client.request_failed(request, f"cannot resolve {host}: {exc}", self._clock())
            return
        try:
            response = await self._sender.send(request, address, transport)
        except OSError as exc:
            client.request_failed(request, f"transport error: {exc}", self._clock())
            return
        if "Call-ID" not in response.headers:
            client.request_failed(request, f"{response.status} {response.reason}", self._clock())
        else:
            client.receive_response(response, self._clock())

    async def _run(self, running: _Running) -> None:
        client = running.client
        client.start(self._clock())
        while True:
            try:
                await self._exchange(client)
            except Exception:
                log.exception("registration of trunk %s failed unexpectedly", running.trunk.id)
            await self._notify()
            deadline = client.next_timeout()
            running.wake.clear()
            delay = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.wake.wait(), delay)
            client.handle_timer(self._clock())

    async def close(self) -> None:
        """Unregister everything (bounded wait) and stop."""
        for key in list(self._running):
            await self._stop(key)
