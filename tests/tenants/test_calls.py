"""Call records on a real (embedded) Redis: create, update, filters, pagination, turns."""

from __future__ import annotations

import pytest

from voxgate.tenants.calls import CallFilter, CallRecord, CallRecords
from voxgate.tenants.errors import InvalidInput, NotFound
from voxgate.tenants.store import Store

TENANT = "t_test000001"


def record(n: int, *, agent: str = "ag_a", provider: str = "twilio", at: float = 0.0) -> CallRecord:
    return CallRecord(
        id=f"CA{n:04d}",
        tenant_id=TENANT,
        agent_id=agent,
        provider=provider,
        from_number="+15550100000",
        to_number="+15550109999",
        status="ringing",
        created_at=at or 1000.0 + n,
    )


async def test_create_is_idempotent_and_update_is_atomic(store: Store) -> None:
    records = CallRecords(store)
    await records.create(record(1))
    again = record(1)
    again.agent_id = "ag_other"
    assert (await records.create(again)).agent_id == "ag_a"  # first write wins
    updated = await records.update(TENANT, "CA0001", status="completed", duration=3.5)
    assert (updated.status, updated.duration) == ("completed", 3.5)
    assert (await records.get(TENANT, "CA0001")).status == "completed"
    with pytest.raises(NotFound):
        await records.update(TENANT, "CA9999", status="failed")
    with pytest.raises(NotFound):
        await records.get(TENANT, "../etc")


async def test_list_filters_and_cursor_pages_cover_everything_once(store: Store) -> None:
    records = CallRecords(store)
    for n in range(1, 41):
        agent = "ag_a" if n % 2 else "ag_b"
        provider = "sip" if n % 5 == 0 else "twilio"
        # Some calls share a timestamp: the cursor must handle ties.
        await records.create(record(n, agent=agent, provider=provider, at=1000.0 + n // 3))
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        page = await records.list(TENANT, cursor=cursor, limit=7)
        seen += [c.id for c in page.calls]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"CA{n:04d}" for n in range(1, 41))
    assert len(seen) == len(set(seen))
    created = [1000.0 + int(s[2:]) // 3 for s in seen]
    assert created == sorted(created, reverse=True)

    only_b = await records.list(TENANT, CallFilter(agent_id="ag_b"), limit=100)
    assert {c.agent_id for c in only_b.calls} == {"ag_b"} and len(only_b.calls) == 20
    sip = await records.list(TENANT, CallFilter(provider="sip"), limit=100)
    assert len(sip.calls) == 8
    window = await records.list(TENANT, CallFilter(since=1005.0, until=1006.0), limit=100)
    assert {c.created_at for c in window.calls} == {1005.0, 1006.0}
    with pytest.raises(InvalidInput):
        await records.list(TENANT, cursor="garbage")


async def test_turns_and_events_append_in_order_and_are_capped(store: Store) -> None:
    records = CallRecords(store)
    await records.create(record(1))
    await records.append_turn(TENANT, "CA0001", {"role": "caller", "text": "hello"})
    await records.append_turn(TENANT, "CA0001", {"role": "agent", "text": "hi there"})
    for i in range(600):
        await records.append_event(TENANT, "CA0001", "tick", str(i), at=float(i))
    detail = await records.detail(TENANT, "CA0001")
    assert [t["text"] for t in detail.turns] == ["hello", "hi there"]
    assert len(detail.events) == 500 and detail.events[0].detail == "0"
    with pytest.raises(NotFound):
        await records.append_turn(TENANT, "CA0404", {"text": "x"})
    with pytest.raises(InvalidInput):
        await records.append_turn(TENANT, "CA0001", {"text": "x" * 20000})


async def test_oldest_records_fall_off_past_the_cap(store: Store) -> None:
    records = CallRecords(store, max_calls=5)
    for n in range(1, 9):
        await records.create(record(n))
    page = await records.list(TENANT, limit=50)
    assert [c.id for c in page.calls] == [f"CA{n:04d}" for n in range(8, 3, -1)]
    with pytest.raises(NotFound):
        await records.get(TENANT, "CA0001")
