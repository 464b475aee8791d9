from __future__ import annotations

import pytest

from voxgate.tenants import keyspace
from voxgate.tenants.store import Store


def test_key_builders() -> None:
    assert keyspace.tenant_key("t_a", "agent", "ag_1") == "vg:{t_a}:agent:ag_1"
    assert keyspace.system_key("number", "+1415") == "vg:sys:number:+1415"
    assert keyspace.tenant_of("vg:{t_a}:agent:ag_1") == "t_a"
    for other in ("vg:sys:tenants", "vg:{t_a", "vg:{BAD}:x", "x"):
        assert keyspace.tenant_of(other) is None
    for bad in ("", "T_A", "t a", "t}x", "../x"):
        with pytest.raises(ValueError):
            keyspace.tenant_key(bad, "agent")


async def test_patterns_match_only_their_tenant(store: Store) -> None:
    for key in ("vg:{t_a}:x", "vg:{t_a}:dek", "vg:{t_ab}:x", "vg:{t_b}:dek", "vg:sys:dek"):
        await store.redis.set(key, b"1")
    found = {k async for k in store.redis.scan_iter(match=keyspace.tenant_pattern("t_a"))}
    assert found == {b"vg:{t_a}:x", b"vg:{t_a}:dek"}
    deks = {k async for k in store.redis.scan_iter(match=keyspace.tenant_kind_pattern("dek"))}
    assert deks == {b"vg:{t_a}:dek", b"vg:{t_b}:dek"}
