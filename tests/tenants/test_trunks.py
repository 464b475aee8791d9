from __future__ import annotations

import pytest

from voxgate.tenants.errors import InvalidInput, NotFound, QuotaExceeded
from voxgate.tenants.models import TenantCreate
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.secrets import SecretVault
from voxgate.tenants.store import Store
from voxgate.tenants.trunks import (
    VOIPMS_POPS,
    TrunkCreate,
    TrunkStore,
    TrunkUpdate,
    secret_name,
    split_host_port,
)

PASSWORD = "zz-trunk-password-5b1e"


async def _tenant(store: Store, master_key: bytes, name: str = "A") -> str:
    return (await TenantRegistry(store, master_key).create(TenantCreate(name=name), "a")).id


def test_split_host_port() -> None:
    assert split_host_port("chicago.voip.ms") == ("chicago.voip.ms", 5060)
    assert split_host_port("127.0.0.1:5080") == ("127.0.0.1", 5080)
    assert split_host_port("[::1]:5090") == ("::1", 5090)
    assert split_host_port("[::1]") == ("::1", 5060)


async def test_voipms_preset_and_secret(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    vault = SecretVault(store, master_key)
    trunks = TrunkStore(store, vault)
    trunk = await trunks.create(
        tenant_id,
        TrunkCreate(
            name="voip.ms main", preset="voipms", username="123456_agent", password=PASSWORD,
            caller_id="+15145550100",
        ),
    )  # fmt: skip
    assert trunk.id.startswith("trk_")
    assert trunk.hosts == list(VOIPMS_POPS) and trunk.register_expires == 300
    assert trunk.has_password and trunk.register and trunk.transport == "udp"
    assert trunk.host_ports()[0] == ("atlanta.voip.ms", 5060)
    # The password lives only in the vault, encrypted; the record never holds it.
    raw = await store.redis.hget(f"vg:{{{tenant_id}}}:trunks", trunk.id)
    assert raw is not None and PASSWORD.encode() not in raw
    assert PASSWORD not in repr(await trunks.get(tenant_id, trunk.id))
    assert await vault.get(tenant_id, secret_name(trunk.id)) == {"password": PASSWORD}
    creds = await trunks.credentials(tenant_id, trunk.id)
    assert creds is not None and creds.username == "123456_agent" and creds.password == PASSWORD
    assert PASSWORD not in repr(creds)

    assert await trunks.list(tenant_id) == [trunk]
    assert await trunks.all() == [(tenant_id, trunk)]

    updated = await trunks.update(
        tenant_id, trunk.id, TrunkUpdate(hosts=["montreal.voip.ms"], password="new-pass")
    )
    assert updated.hosts == ["montreal.voip.ms"] and updated.caller_id == "+15145550100"
    creds = await trunks.credentials(tenant_id, trunk.id)
    assert creds is not None and creds.password == "new-pass"

    await trunks.delete(tenant_id, trunk.id)
    assert await trunks.list(tenant_id) == []
    assert await vault.get(tenant_id, secret_name(trunk.id)) is None
    assert await trunks.all() == []
    with pytest.raises(NotFound):
        await trunks.get(tenant_id, trunk.id)
    with pytest.raises(NotFound):
        await trunks.delete(tenant_id, trunk.id)


async def test_validation(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    trunks = TrunkStore(store, SecretVault(store, master_key))
    cases = [
        (TrunkCreate(name="x", username="u", password="p"), "$.hosts"),
        (TrunkCreate(name="x", preset="voipms", username="alice", password="p"), "$.username"),
        (TrunkCreate(name="x", hosts=["h.example"], username="u"), "$.password"),
        (
            TrunkCreate(name="x", hosts=["bad host!"], username="u", password="p"),
            "$.hosts[0]",
        ),
        (
            TrunkCreate(name="x", hosts=["h:70000"], username="u", password="p"),
            "$.hosts[0]",
        ),
        (
            TrunkCreate(
                name="x", hosts=["h"], username="u", password="p", inbound_sources=["1.2.3.x"]
            ),
            "$.inbound_sources[0]",
        ),
        (TrunkCreate(name="x", hosts=["h"], username="u", caller_id="555"), "$.caller_id"),
    ]
    for body, path in cases:
        with pytest.raises(InvalidInput) as info:
            await trunks.create(tenant_id, body)
        assert info.value.path == path, body
    # IP-authenticated trunks need no password when they do not register.
    ip_auth = await trunks.create(
        tenant_id, TrunkCreate(name="ip", hosts=["198.51.100.7"], username="u", register=False)
    )
    assert not ip_auth.has_password and await trunks.credentials(tenant_id, ip_auth.id) is None
    with pytest.raises(InvalidInput):
        await trunks.update(tenant_id, ip_auth.id, TrunkUpdate(register=True))
    await trunks.delete(tenant_id, ip_auth.id)  # no secret to delete: still fine


async def test_isolation_quota_and_source_match(store: Store, master_key: bytes) -> None:
    a = await _tenant(store, master_key, "A")
    b = await _tenant(store, master_key, "B")
    trunks = TrunkStore(store, SecretVault(store, master_key), max_trunks=2)
    made = await trunks.create(
        a,
        TrunkCreate(
            name="t", hosts=["127.0.0.1:5099"], username="u", register=False,
            inbound_sources=["192.0.2.0/24"],
        ),
    )  # fmt: skip
    with pytest.raises(NotFound):
        await trunks.get(b, made.id)
    with pytest.raises(NotFound):
        await trunks.update(b, made.id, TrunkUpdate(name="stolen"))
    with pytest.raises(NotFound):
        await trunks.delete(b, made.id)
    with pytest.raises(NotFound):
        await trunks.create(
            "t_nope", TrunkCreate(name="t", hosts=["h"], username="u", register=False)
        )
    assert await trunks.match_source("192.0.2.77") == (a, made)
    assert await trunks.match_source("198.51.100.1") is None
    assert await trunks.match_source("not-an-ip") is None
    await trunks.update(a, made.id, TrunkUpdate(enabled=False))
    assert await trunks.match_source("192.0.2.77") is None

    await trunks.create(a, TrunkCreate(name="t2", hosts=["h"], username="u", register=False))
    with pytest.raises(QuotaExceeded):
        await trunks.create(a, TrunkCreate(name="t3", hosts=["h"], username="u", register=False))
    # A deleted tenant's trunks vanish from the system index.
    await TenantRegistry(store, master_key).delete(a, "admin")
    assert await trunks.all() == []
