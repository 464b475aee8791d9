"""Call records: one per call, per tenant, in Redis.

Layout (all under the tenant's hash tag, so a tenant's calls share one slot):

* ``vg:{t}:call:<id>`` — the :class:`CallRecord` as JSON;
* ``vg:{t}:calls`` — sorted set of call ids scored by ``created_at`` (listing);
* ``vg:{t}:call_events:<id>`` / ``vg:{t}:call_turns:<id>`` — capped lists of
  JSON events and transcript turns, appended by the media core and the
  speech worker while the call runs.

A tenant keeps at most ``max_calls`` records; the oldest fall off as new ones
arrive, so storage is bounded whatever the call volume.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable
from typing import Any, Literal, cast

import msgspec
from redis.asyncio.client import Pipeline

from voxgate.tenants import keyspace
from voxgate.tenants.errors import InvalidInput, NotFound
from voxgate.tenants.store import Store, start_writes, to_bytes

__all__ = [
    "CALL_ID_PATTERN",
    "CallDetail",
    "CallEventEntry",
    "CallFilter",
    "CallPage",
    "CallRecord",
    "CallRecordStatus",
    "CallRecords",
    "check_call_id",
]

CALL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_CALL_ID = re.compile(CALL_ID_PATTERN)

CallRecordStatus = Literal[
    "ringing", "in_progress", "completed", "failed", "busy", "no_answer", "canceled"
]
ProviderName = Literal["twilio", "sip", "webrtc"]
CallDirection = Literal["inbound", "outbound"]

MAX_EVENTS = 500
MAX_TURNS = 500
MAX_ITEM_BYTES = 16 * 1024
_SCAN_BATCH = 200
_SCAN_ROUNDS = 10


class CallRecord(msgspec.Struct, kw_only=True):
    """One call as stored and listed (times are Unix seconds)."""

    id: str
    tenant_id: str
    agent_id: str
    provider: str
    from_number: str
    to_number: str
    status: CallRecordStatus
    direction: CallDirection = "inbound"
    created_at: float
    started_at: float | None = None  # media connected
    ended_at: float | None = None
    duration: float | None = None  # seconds of connected media
    end_reason: str | None = None
    recording: bool = False
    # Relative to the data directory, e.g. ``blobs/<tenant>/recordings/<id>.wav``.
    recording_path: str | None = None
    provider_status: str | None = None  # last status the provider reported
    provider_duration: float | None = None  # the provider's billed duration
    frames_in: int = 0
    frames_out: int = 0


class CallEventEntry(msgspec.Struct, kw_only=True):
    """Something that happened on a call."""

    at: float
    kind: str
    detail: str = ""


class CallDetail(msgspec.Struct, kw_only=True):
    """A call with its event log and transcript turns (when a speech worker wrote any)."""

    call: CallRecord
    events: list[CallEventEntry]
    turns: list[dict[str, Any]]


class CallPage(msgspec.Struct, kw_only=True):
    """One page of calls, newest first; pass ``next_cursor`` back for the next page."""

    calls: list[CallRecord]
    next_cursor: str | None = None


class CallFilter(msgspec.Struct, kw_only=True, frozen=True):
    """Listing filters; ``since``/``until`` bound ``created_at`` (inclusive)."""

    agent_id: str | None = None
    provider: str | None = None
    status: str | None = None
    direction: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, record: CallRecord) -> bool:
        return (
            (self.agent_id is None or record.agent_id == self.agent_id)
            and (self.provider is None or record.provider == self.provider)
            and (self.direction is None or record.direction == self.direction)
            and (self.status is None or record.status == self.status)
        )


def check_call_id(call_id: str) -> str:
    """``call_id`` if it is a safe identifier; NotFound otherwise (no such call can exist)."""
    if not _CALL_ID.match(call_id):
        raise NotFound(f"call {call_id!r} not found")
    return call_id


def _keys(tenant_id: str, call_id: str) -> tuple[str, str, str]:
    return (
        keyspace.tenant_key(tenant_id, "call", call_id),
        keyspace.tenant_key(tenant_id, "call_events", call_id),
        keyspace.tenant_key(tenant_id, "call_turns", call_id),
    )


def _index_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "calls")


def _encode_cursor(score: float, call_id: str) -> str:
    return f"{score!r}_{call_id}"


def _decode_cursor(cursor: str) -> tuple[float, str]:
    score_text, sep, call_id = cursor.partition("_")
    try:
        score = float(score_text)
    except ValueError:
        raise InvalidInput("malformed cursor", "cursor") from None
    if not sep or not _CALL_ID.match(call_id):
        raise InvalidInput("malformed cursor", "cursor")
    return score, call_id


_RECORD_DECODER = msgspec.json.Decoder(CallRecord)
_EVENT_DECODER = msgspec.json.Decoder(CallEventEntry)
_TURN_DECODER = msgspec.json.Decoder(dict[str, Any])


class CallRecords:
    """Create, update, list and read call records; append events and turns."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        max_calls: int = 100_000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_calls = max_calls

    async def create(self, record: CallRecord) -> CallRecord:
        """Store a new record (an existing one with the same id is left as is)."""
        check_call_id(record.id)
        key, _, _ = _keys(record.tenant_id, record.id)
        index = _index_key(record.tenant_id)
        redis = self._store.redis
        async with self._store.guard():
            created = await redis.set(key, msgspec.json.encode(record), nx=True)
            if not created:
                raw = await redis.get(key)
                if raw is not None:
                    return _RECORD_DECODER.decode(to_bytes(raw))
            await redis.zadd(index, {record.id: record.created_at})
            if await redis.zcard(index) > self._max_calls:
                await self._trim(record.tenant_id)
        return record

    async def _trim(self, tenant_id: str) -> None:
        index = _index_key(tenant_id)
        redis = self._store.redis
        excess = await redis.zcard(index) - self._max_calls
        if excess <= 0:
            return
        oldest = await redis.zrange(index, 0, excess - 1)
        pipe = redis.pipeline(transaction=True)
        for raw_id in oldest:
            call_id = to_bytes(raw_id).decode()
            pipe.unlink(*_keys(tenant_id, call_id))
            pipe.zrem(index, call_id)
        await pipe.execute()

    async def update(self, tenant_id: str, call_id: str, **changes: Any) -> CallRecord:
        """Apply field changes atomically; NotFound if there is no such call."""
        check_call_id(call_id)
        key, _, _ = _keys(tenant_id, call_id)

        async def attempt(pipe: Pipeline) -> CallRecord:
            raw = await pipe.get(key)
            if raw is None:
                raise NotFound(f"call {call_id!r} not found")
            record = _RECORD_DECODER.decode(to_bytes(raw))
            updated = msgspec.structs.replace(record, **changes)
            start_writes(pipe)
            pipe.set(key, msgspec.json.encode(updated))
            return updated

        return await self._store.optimistic([key], attempt)

    async def get(self, tenant_id: str, call_id: str) -> CallRecord:
        check_call_id(call_id)
        key, _, _ = _keys(tenant_id, call_id)
        async with self._store.guard():
            raw = await self._store.redis.get(key)
        if raw is None:
            raise NotFound(f"call {call_id!r} not found")
        return _RECORD_DECODER.decode(to_bytes(raw))

    async def detail(self, tenant_id: str, call_id: str) -> CallDetail:
        """The record plus its events and transcript turns."""
        check_call_id(call_id)
        key, events_key, turns_key = _keys(tenant_id, call_id)
        async with self._store.guard():
            pipe = self._store.redis.pipeline(transaction=False)
            pipe.get(key)
            pipe.lrange(events_key, 0, -1)
            pipe.lrange(turns_key, 0, -1)
            raw, events, turns = await pipe.execute()
        if raw is None:
            raise NotFound(f"call {call_id!r} not found")
        return CallDetail(
            call=_RECORD_DECODER.decode(to_bytes(raw)),
            events=[_EVENT_DECODER.decode(to_bytes(e)) for e in events],
            turns=[_TURN_DECODER.decode(to_bytes(t)) for t in turns],
        )

    async def _append(self, key: str, record_key: str, item: bytes, cap: int) -> None:
        if len(item) > MAX_ITEM_BYTES:
            raise InvalidInput(f"item exceeds {MAX_ITEM_BYTES} bytes", "$")
        redis = self._store.redis
        async with self._store.guard():
            if not await redis.exists(record_key):
                raise NotFound("call not found")
            pipe = redis.pipeline(transaction=True)
            pipe.rpush(key, item)
            pipe.ltrim(key, 0, cap - 1)  # keep the first ``cap``: a call's start matters most
            await pipe.execute()

    async def append_event(
        self, tenant_id: str, call_id: str, kind: str, detail: str = "", at: float | None = None
    ) -> None:
        """Add an event to the call's log (bounded; later ones beyond the cap are dropped)."""
        check_call_id(call_id)
        key, events_key, _ = _keys(tenant_id, call_id)
        entry = CallEventEntry(at=self._clock() if at is None else at, kind=kind, detail=detail)
        await self._append(events_key, key, msgspec.json.encode(entry), MAX_EVENTS)

    async def append_events(
        self, tenant_id: str, call_id: str, events: builtins.list[CallEventEntry]
    ) -> None:
        """Add several events in one round trip."""
        if not events:
            return
        check_call_id(call_id)
        _, events_key, _ = _keys(tenant_id, call_id)
        async with self._store.guard():
            pipe = self._store.redis.pipeline(transaction=True)
            pipe.rpush(events_key, *(msgspec.json.encode(e) for e in events))
            pipe.ltrim(events_key, 0, MAX_EVENTS - 1)
            await pipe.execute()

    async def append_turn(self, tenant_id: str, call_id: str, turn: dict[str, Any]) -> None:
        """Add a transcript turn (any JSON object, e.g. ``{"role", "text", "at"}``)."""
        check_call_id(call_id)
        key, _, turns_key = _keys(tenant_id, call_id)
        if not isinstance(turn, dict):
            raise InvalidInput("a turn must be a JSON object", "$")
        try:
            encoded = msgspec.json.encode(turn)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidInput(f"turn is not JSON-encodable: {exc}", "$") from None
        await self._append(turns_key, key, encoded, MAX_TURNS)

    async def list(
        self,
        tenant_id: str,
        filters: CallFilter | None = None,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> CallPage:
        """Newest first. Scans a bounded number of records per request; when the
        scan ends before the page fills, ``next_cursor`` lets the client go on."""
        if not 1 <= limit <= 500:
            raise InvalidInput("limit must be 1..500", "limit")
        filters = filters or CallFilter()
        index = _index_key(tenant_id)
        high: float | str = "+inf" if filters.until is None else filters.until
        low: float | str = "-inf" if filters.since is None else filters.since
        after: tuple[float, str] | None = None
        if cursor is not None:
            after = _decode_cursor(cursor)
            if filters.until is None or after[0] < filters.until:
                high = after[0]
        redis = self._store.redis
        found: builtins.list[CallRecord] = []
        offset = 0
        last: tuple[float, str] | None = None
        exhausted = False
        async with self._store.guard():
            for _ in range(_SCAN_ROUNDS):
                batch = await redis.zrevrangebyscore(
                    index, high, low, start=offset, num=_SCAN_BATCH, withscores=True
                )
                offset += len(batch)
                candidates: builtins.list[tuple[str, float]] = []
                # redis-py types this reply loosely; with scores it is (member, score) pairs.
                for raw_id, raw_score in cast(builtins.list[tuple[bytes, float]], batch):
                    call_id = to_bytes(raw_id).decode()
                    score = float(raw_score)
                    # Equal scores come in descending id order: skip up to the cursor.
                    if after is not None and score == after[0] and call_id >= after[1]:
                        continue
                    candidates.append((call_id, score))
                if candidates:
                    raws = await redis.mget(
                        [_keys(tenant_id, call_id)[0] for call_id, _ in candidates]
                    )
                    for (call_id, score), raw in zip(candidates, raws, strict=True):
                        last = (score, call_id)
                        if raw is None:
                            continue
                        record = _RECORD_DECODER.decode(to_bytes(raw))
                        if filters.matches(record):
                            found.append(record)
                            if len(found) == limit:
                                break
                if len(found) == limit:
                    break
                if len(batch) < _SCAN_BATCH:
                    exhausted = True
                    break
        if len(found) == limit:
            tail = found[-1]
            more = _encode_cursor(tail.created_at, tail.id)
            return CallPage(calls=found, next_cursor=more)
        if exhausted or last is None:
            return CallPage(calls=found)
        return CallPage(calls=found, next_cursor=_encode_cursor(*last))
