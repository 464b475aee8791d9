"""SIP trunks: a tenant's carrier accounts (voip.ms or any SIP provider).

A trunk names the provider's servers (tried in order: the first answering one
is used, the others are failover candidates), the account to authenticate
as, whether to REGISTER so inbound calls reach us, the caller ID for outbound
calls, the transport, and which source addresses count as "this carrier" for
inbound INVITEs.

The password never sits in the trunk record: it is stored through the
:class:`SecretVault` as the tenant secret ``trunk-<trunk id>`` and is only
read back internally (:meth:`TrunkStore.credentials`) by the REGISTER client
and the outbound INVITE path.  A system index ``vg:sys:trunks`` lists every
trunk so the registration driver and inbound source matching can find them
without scanning keys.
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import re
import time
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec
from msgspec import Meta
from redis.asyncio.client import Pipeline

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import InvalidInput, NotFound, QuotaExceeded
from voxgate.tenants.ids import new_id
from voxgate.tenants.models import E164, revalidate
from voxgate.tenants.secrets import SecretVault
from voxgate.tenants.store import Store, start_writes, to_bytes

MAX_TRUNKS = 50
_INDEX = keyspace.system_key("trunks")

# voip.ms points of presence; with the preset and no hosts given they are the
# failover order.  Operators should list the POP nearest to them first.
VOIPMS_POPS: tuple[str, ...] = (
    "atlanta.voip.ms",
    "chicago.voip.ms",
    "dallas.voip.ms",
    "newyork.voip.ms",
    "losangeles.voip.ms",
    "seattle.voip.ms",
    "montreal.voip.ms",
    "toronto.voip.ms",
)
# voip.ms asks for registrations of at most a few minutes so NAT bindings stay open.
VOIPMS_EXPIRES = 300

_HOST_PATTERN = (
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
_HOST = re.compile(_HOST_PATTERN)
# voip.ms accounts are digits; sub-accounts are ``<account>_<name>``.
_VOIPMS_USER = re.compile(r"^[0-9]{3,10}(?:_[A-Za-z0-9]{1,32})?$")
_USER = re.compile(r"^[A-Za-z0-9_.!~*'()&=+$,;?/%-]{1,64}$")

Preset = Literal["voipms", "generic"]
TrunkTransport = Literal["udp", "tcp"]
HostPort = Annotated[
    str,
    Meta(
        pattern=_HOST_PATTERN,
        description="Server as host or host:port, e.g. chicago.voip.ms or 203.0.113.5:5080.",
    ),
]
Cidr = Annotated[
    str, Meta(max_length=49, description="Source address or network, e.g. 1.2.3.0/24.")
]
TrunkName = Annotated[str, Meta(min_length=1, max_length=100)]
Username = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        description="SIP account; for voip.ms the account or sub-account (123456_sub).",
    ),
]
Password = Annotated[
    str, Meta(min_length=1, max_length=256, description="Write-only; stored as a secret.")
]
Expires = Annotated[int, Meta(ge=60, le=86400, description="Requested registration lifetime.")]
Hosts = Annotated[list[HostPort], Meta(max_length=16)]
Sources = Annotated[list[Cidr], Meta(max_length=64)]


class TrunkCreate(msgspec.Struct, kw_only=True):
    """Body of ``POST …/trunks``."""

    name: TrunkName
    preset: Preset = "generic"
    hosts: Hosts = msgspec.field(default_factory=list)
    username: Username
    password: Password | None = None
    register: bool = True
    register_expires: Expires | None = None
    caller_id: E164 | None = None
    transport: TrunkTransport = "udp"
    inbound_sources: Sources = msgspec.field(default_factory=list)
    enabled: bool = True


class TrunkUpdate(msgspec.Struct, kw_only=True):
    """Body of ``PATCH …/trunks/{id}``; ``null`` fields stay as they are."""

    name: TrunkName | None = None
    hosts: Hosts | None = None
    username: Username | None = None
    password: Password | None = None
    register: bool | None = None
    register_expires: Expires | None = None
    caller_id: E164 | None = None
    transport: TrunkTransport | None = None
    inbound_sources: Sources | None = None
    enabled: bool | None = None


class Trunk(msgspec.Struct, kw_only=True):
    """A trunk as stored and returned; the password is never part of it."""

    id: str
    name: str
    preset: Preset
    hosts: list[str]
    username: str
    has_password: bool
    register: bool
    register_expires: int
    caller_id: str | None
    transport: TrunkTransport
    inbound_sources: list[str]
    enabled: bool
    created_at: float
    updated_at: float

    def host_ports(self) -> list[tuple[str, int]]:
        """``(host, port)`` per server in failover order (port 5060 when absent)."""
        return [split_host_port(h) for h in self.hosts]


class TrunkCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """What the SIP side needs to authenticate; internal only, never serialised to clients."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"TrunkCredentials(username={self.username!r}, password=***)"


def split_host_port(text: str) -> tuple[str, int]:
    """``host[:port]`` -> ``(host, port)``; IPv6 literals keep no brackets."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 5060
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return text, 5060


def secret_name(trunk_id: str) -> str:
    """The secret that holds a trunk's password."""
    return f"trunk-{trunk_id}"


def _check(trunk: Trunk) -> None:
    """Rules that span fields or need more than a pattern."""
    if not trunk.hosts:
        raise InvalidInput("at least one server host is required", "$.hosts")
    for index, host in enumerate(trunk.hosts):
        if not _HOST.match(host):
            raise InvalidInput("not a host or host:port", f"$.hosts[{index}]")
        port = split_host_port(host)[1]
        if not 1 <= port <= 65535:
            raise InvalidInput("port outside 1..65535", f"$.hosts[{index}]")
    if trunk.preset == "voipms" and not _VOIPMS_USER.match(trunk.username):
        raise InvalidInput(
            "voip.ms usernames are the account number or a sub-account like 123456_name",
            "$.username",
        )
    if not _USER.match(trunk.username):
        raise InvalidInput("username has characters SIP cannot carry", "$.username")
    for index, source in enumerate(trunk.inbound_sources):
        try:
            ipaddress.ip_network(source, strict=False)
        except ValueError:
            raise InvalidInput("not an IP address or CIDR", f"$.inbound_sources[{index}]") from None
    if trunk.register and not trunk.has_password:
        raise InvalidInput("registration needs a password", "$.password")


def _trunks_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "trunks")


class TrunkStore:
    """CRUD over a tenant's trunks; passwords go to the secret vault."""

    def __init__(
        self,
        store: Store,
        secrets: SecretVault,
        *,
        clock: Callable[[], float] = time.time,
        max_trunks: int = MAX_TRUNKS,
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._clock = clock
        self._audit = AuditLog(store, clock=clock)
        self._max_trunks = max_trunks

    async def create(self, tenant_id: str, body: TrunkCreate, actor: str = "system") -> Trunk:
        """Validate and store a trunk (and its password as a secret)."""
        body = revalidate(body)
        trunks_key = _trunks_key(tenant_id)
        tenant_key = keyspace.tenant_key(tenant_id, "tenant")
        hosts = list(body.hosts)
        if not hosts and body.preset == "voipms":
            hosts = list(VOIPMS_POPS)
        expires = body.register_expires
        if expires is None:
            expires = VOIPMS_EXPIRES if body.preset == "voipms" else 3600
        now = self._clock()
        trunk = Trunk(
            id=new_id("trk"),
            name=body.name,
            preset=body.preset,
            hosts=hosts,
            username=body.username,
            has_password=body.password is not None,
            register=body.register,
            register_expires=expires,
            caller_id=body.caller_id,
            transport=body.transport,
            inbound_sources=list(body.inbound_sources),
            enabled=body.enabled,
            created_at=now,
            updated_at=now,
        )
        _check(trunk)

        async def attempt(pipe: Pipeline) -> None:
            if not await pipe.exists(tenant_key):
                raise NotFound(f"tenant {tenant_id!r} not found")
            if await pipe.hlen(trunks_key) >= self._max_trunks:
                raise QuotaExceeded(f"a tenant may define at most {self._max_trunks} trunks")
            start_writes(pipe)
            pipe.hset(trunks_key, trunk.id, msgspec.json.encode(trunk))
            pipe.sadd(_INDEX, f"{tenant_id} {trunk.id}")

        # The secret first: a trunk that exists must be able to authenticate.
        if body.password is not None:
            await self._secrets.put(
                tenant_id, secret_name(trunk.id), {"password": body.password}, actor
            )
        await self._store.optimistic([tenant_key, trunks_key], attempt)
        await self._audit.append(
            tenant_id, actor, "trunk.create", trunk.id, {"name": trunk.name, "preset": trunk.preset}
        )
        return trunk

    async def get(self, tenant_id: str, trunk_id: str) -> Trunk:
        """One trunk, or NotFound."""
        key = _trunks_key(tenant_id)
        async with self._store.guard():
            raw = await self._store.redis.hget(key, trunk_id)
        if raw is None:
            raise NotFound(f"trunk {trunk_id!r} not found")
        return msgspec.json.decode(to_bytes(raw), type=Trunk)

    async def list(self, tenant_id: str) -> builtins.list[Trunk]:
        """The tenant's trunks, oldest first."""
        key = _trunks_key(tenant_id)
        async with self._store.guard():
            raw = await self._store.redis.hgetall(key)
        trunks = [msgspec.json.decode(to_bytes(v), type=Trunk) for v in raw.values()]
        return sorted(trunks, key=lambda t: (t.created_at, t.id))

    async def all(self) -> builtins.list[tuple[str, Trunk]]:
        """Every tenant's trunks as ``(tenant id, trunk)`` (registration driver, inbound match)."""
        async with self._store.guard():
            members = sorted(to_bytes(m).decode() for m in await self._store.redis.smembers(_INDEX))
        found: builtins.list[tuple[str, Trunk]] = []
        for member in members:
            tenant_id, _, trunk_id = member.partition(" ")
            try:
                found.append((tenant_id, await self.get(tenant_id, trunk_id)))
            except NotFound:
                # Index entry of a trunk deleted with its tenant: drop it.
                async with self._store.guard():
                    await self._store.redis.srem(_INDEX, member)
        return found

    async def update(
        self, tenant_id: str, trunk_id: str, body: TrunkUpdate, actor: str = "system"
    ) -> Trunk:
        """Change some fields; a new password replaces the stored secret."""
        body = revalidate(body)
        key = _trunks_key(tenant_id)
        changes = {
            name: value
            for name in body.__struct_fields__
            if name != "password" and (value := getattr(body, name)) is not None
        }

        async def attempt(pipe: Pipeline) -> Trunk:
            raw = await pipe.hget(key, trunk_id)
            if raw is None:
                raise NotFound(f"trunk {trunk_id!r} not found")
            current = msgspec.json.decode(to_bytes(raw), type=Trunk)
            trunk = msgspec.structs.replace(current, **changes)
            trunk.updated_at = self._clock()
            if body.password is not None:
                trunk.has_password = True
            _check(trunk)
            start_writes(pipe)
            pipe.hset(key, trunk_id, msgspec.json.encode(trunk))
            return trunk

        if body.password is not None:
            await self.get(tenant_id, trunk_id)
        trunk = await self._store.optimistic([key], attempt)
        if body.password is not None:
            await self._secrets.put(
                tenant_id, secret_name(trunk_id), {"password": body.password}, actor
            )
        await self._audit.append(
            tenant_id, actor, "trunk.update", trunk_id, {"fields": ",".join(sorted(changes))}
        )
        return trunk

    async def delete(self, tenant_id: str, trunk_id: str, actor: str = "system") -> None:
        """Remove a trunk and its password secret."""
        key = _trunks_key(tenant_id)
        async with self._store.guard():
            pipe = self._store.redis.pipeline(transaction=True)
            pipe.hdel(key, trunk_id)
            pipe.srem(_INDEX, f"{tenant_id} {trunk_id}")
            removed, _ = await pipe.execute()
        if not removed:
            raise NotFound(f"trunk {trunk_id!r} not found")
        # An IP-authenticated trunk never had a password.
        with contextlib.suppress(NotFound):
            await self._secrets.delete(tenant_id, secret_name(trunk_id), actor)
        await self._audit.append(tenant_id, actor, "trunk.delete", trunk_id)

    async def credentials(self, tenant_id: str, trunk_id: str) -> TrunkCredentials | None:
        """Username and password for digest auth; None for a trunk without a password."""
        trunk = await self.get(tenant_id, trunk_id)
        value = await self._secrets.get(tenant_id, secret_name(trunk_id))
        if value is None or not isinstance(value.get("password"), str):
            return None
        return TrunkCredentials(username=trunk.username, password=value["password"])

    async def match_source(self, address: str) -> tuple[str, Trunk] | None:
        """The enabled trunk whose ``inbound_sources`` contain ``address``, if any.

        Trunks without sources are matched by the SIP side against their
        resolved hosts; this covers the explicit networks only.
        """
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        for tenant_id, trunk in await self.all():
            if not trunk.enabled:
                continue
            for source in trunk.inbound_sources:
                if ip in ipaddress.ip_network(source, strict=False):
                    return tenant_id, trunk
        return None
