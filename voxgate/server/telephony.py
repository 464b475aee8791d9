"""The telephony side of ``voxgate serve``: SIP listener, trunk registrations, trunk dialling.

:func:`sip_listener_hook` is a :data:`~voxgate.server.runtime.ListenerHook`:
once HTTP is up it opens SIP on ``--sip-port`` (UDP and TCP on one port
number; 0 picks a free one), puts its drain first in the server's drain hooks
(so new INVITEs get ``503`` as soon as a drain starts, while live calls
finish), makes the SIP gateway the outbound orchestrator's trunk dialer,
starts one REGISTER client per registering trunk and publishes their live
status to the trunk API and ``/system/status``.
"""

from __future__ import annotations

import errno
import logging

from msgspec.structs import asdict

from voxgate.admin.status import TrunkRegistrationStatus
from voxgate.server.call_control import CALLS
from voxgate.server.config import Config
from voxgate.server.registrations import RegistrationDriver, UaRegisterSender
from voxgate.server.routes_trunks import OUTBOUND, OutboundParts
from voxgate.server.runtime import Listener, ListenError, Server
from voxgate.server.services import Services
from voxgate.server.sip_gateway import SipListener, start_sip
from voxgate.tenants.trunks import TrunkStore

__all__ = ["SipStarter", "TelephonyListener", "sip_listener_hook"]

log = logging.getLogger("voxgate.sip")


class TelephonyListener:
    """SIP plus what hangs off it; closing unregisters trunks, then stops SIP."""

    def __init__(
        self,
        sip: SipListener,
        registrations: RegistrationDriver,
        parts: OutboundParts,
        services: Services,
    ) -> None:
        self.sip = sip
        self.registrations = registrations
        self._parts = parts
        self._services = services

    @property
    def endpoints(self) -> dict[str, str]:
        return self.sip.endpoints

    def statuses(self) -> list[TrunkRegistrationStatus]:
        """Every running registration, for ``/system/status``."""
        return [
            TrunkRegistrationStatus(tenant_id=tenant_id, trunk_id=trunk_id, **asdict(status))
            for tenant_id, trunk_id, status in self.registrations.statuses()
        ]

    async def close(self) -> None:
        self._services.status.register_trunk_registrations(None)
        if self._parts.registrations is self.registrations:
            self._parts.registrations = None
        orchestrator = self._parts.orchestrator
        if orchestrator is not None and orchestrator.dialer is self.sip.gateway:
            orchestrator.dialer = None
        try:
            await self.registrations.close()
        except Exception:
            log.exception("unregistering trunks failed")
        await self.sip.close()


class SipStarter:
    """A :data:`~voxgate.server.runtime.ListenerHook` starting SIP on a server.

    ``listener`` is the started :class:`TelephonyListener` (None before start).
    ``ring_seconds`` overrides how long inbound calls ring before the answer.
    """

    def __init__(self, server: Server, *, ring_seconds: float | None = None) -> None:
        self._server = server
        self._ring_seconds = ring_seconds
        self.listener: TelephonyListener | None = None

    async def __call__(self, config: Config, services: Services) -> Listener:
        server = self._server
        app = server.app
        try:
            sip = await start_sip(config, services, app[CALLS], ring_seconds=self._ring_seconds)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ListenError("SIP", config.host, config.sip_port, reason or str(exc)) from None
        # First: refusing new INVITEs must not wait for anything else.
        server.drain_hooks.insert(0, sip.drain)
        parts = app[OUTBOUND]
        driver = RegistrationDriver(
            TrunkStore(services.store, services.secrets), UaRegisterSender(sip.ua)
        )
        parts.registrations = driver
        if parts.orchestrator is not None:
            parts.orchestrator.dialer = sip.gateway
        listener = TelephonyListener(sip, driver, parts, services)
        services.status.register_trunk_registrations(listener.statuses)
        try:
            await driver.sync()
        except BaseException:
            await listener.close()
            raise
        self.listener = listener
        return listener


def sip_listener_hook(server: Server, *, ring_seconds: float | None = None) -> SipStarter:
    """The listener hook that starts SIP (and trunk calls) on ``server``."""
    return SipStarter(server, ring_seconds=ring_seconds)
