"""Request and response types of the control plane.

These structs are the HTTP API's schema: the server decodes request bodies into
them and generates its OpenAPI document from them, so constraints and
descriptions live here, next to the fields.  Constraints are only checked when
decoding; services call :func:`revalidate` on structs built in Python (CLI) so
both paths enforce the same rules.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from voxgate.tenants.errors import InvalidInput

T = TypeVar("T")

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
SECRET_NAME_PATTERN = r"^[a-z0-9_-]{1,64}$"

MaxConcurrentCalls = Annotated[
    int, Meta(ge=1, le=10000, description="Calls the tenant may have up at once.")
]
MaxCps = Annotated[int, Meta(ge=1, le=1000, description="New calls per second.")]
MaxWorkers = Annotated[int, Meta(ge=1, le=64, description="Speech worker processes.")]
CallsPerWorker = Annotated[int, Meta(ge=1, le=100, description="Calls one worker may serve.")]
CpuPercent = Annotated[
    int, Meta(ge=1, le=6400, description="CPU share over all workers (100 = one core).")
]
MemoryMb = Annotated[int, Meta(ge=128, le=65536, description="Memory limit over all workers.")]
MaxAgents = Annotated[int, Meta(ge=1, le=10000, description="Agents the tenant may define.")]
MaxKnowledgeMb = Annotated[
    int, Meta(ge=0, le=100000, description="Knowledge-base storage in megabytes.")
]
TenantName = Annotated[str, Meta(min_length=1, max_length=100, description="Display name.")]
AgentName = Annotated[str, Meta(min_length=1, max_length=100, description="Display name.")]
E164 = Annotated[
    str, Meta(pattern=E164_PATTERN, description="Phone number in E.164 form, e.g. +14155550100.")
]
Label = Annotated[str, Meta(max_length=100, description="Free text to recognise the key by.")]


class Quotas(msgspec.Struct, kw_only=True):
    """Per-tenant limits; stored and validated here, enforced by the parts that use them."""

    max_concurrent_calls: MaxConcurrentCalls = 10
    max_cps: MaxCps = 5
    max_workers: MaxWorkers = 2
    calls_per_worker: CallsPerWorker = 4
    cpu_percent: CpuPercent = 100
    memory_mb: MemoryMb = 1024
    max_agents: MaxAgents = 20
    max_knowledge_mb: MaxKnowledgeMb = 100


class QuotasPatch(msgspec.Struct, kw_only=True):
    """Partial quota update; a field left ``null`` keeps its current value."""

    max_concurrent_calls: MaxConcurrentCalls | None = None
    max_cps: MaxCps | None = None
    max_workers: MaxWorkers | None = None
    calls_per_worker: CallsPerWorker | None = None
    cpu_percent: CpuPercent | None = None
    memory_mb: MemoryMb | None = None
    max_agents: MaxAgents | None = None
    max_knowledge_mb: MaxKnowledgeMb | None = None


class TenantCreate(msgspec.Struct, kw_only=True):
    """Body of ``POST /system/tenants``."""

    name: TenantName
    quotas: Quotas | None = None


class TenantUpdate(msgspec.Struct, kw_only=True):
    """Body of a tenant update; ``null`` fields are left unchanged."""

    name: TenantName | None = None
    quotas: QuotasPatch | None = None


TenantStatus = Literal["active", "suspended"]


class Tenant(msgspec.Struct, kw_only=True):
    """A tenant as stored and returned."""

    id: str
    name: str
    status: TenantStatus
    quotas: Quotas
    created_at: float
    updated_at: float


class TenantCreated(msgspec.Struct, kw_only=True):
    """Answer to tenant creation; ``api_key`` is shown this once only."""

    id: str
    name: str
    api_key: str


class ApiKeyInfo(msgspec.Struct, kw_only=True):
    """What may be shown about an API key: never the key itself."""

    id: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked: bool
    label: str


class ApiKeyCreate(msgspec.Struct, kw_only=True):
    """Body of API key creation."""

    label: Label = ""


class ApiKeyCreated(msgspec.Struct, kw_only=True):
    """Answer to API key creation; ``api_key`` is shown this once only."""

    id: str
    api_key: str


class SecretInfo(msgspec.Struct, kw_only=True):
    """A secret's name and when it was last written; values are never returned."""

    name: str
    updated_at: float


class SecretList(msgspec.Struct, kw_only=True):
    """Answer to ``GET …/secrets``."""

    secrets: list[SecretInfo]


Provider = Literal["twilio", "sip"]


class NumberCreate(msgspec.Struct, kw_only=True):
    """Body of ``POST …/numbers``: map a phone number to one of the tenant's agents."""

    number: E164
    provider: Provider
    agent_id: Annotated[str, Meta(min_length=1, max_length=64)]


class Number(msgspec.Struct, kw_only=True):
    """A phone number mapped to an agent."""

    id: str
    number: str
    provider: Provider
    agent_id: str
    created_at: float


class AuditEntry(msgspec.Struct, kw_only=True):
    """One audit record: who did what to which object, and when."""

    id: str
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, str]


class AgentCreate(msgspec.Struct, kw_only=True):
    """Body of ``POST …/agents``: exactly one of ``template`` or ``flow``."""

    name: AgentName
    template: str | None = None
    flow: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.template is None) == (self.flow is None):
            raise ValueError("exactly one of `template` or `flow` is required")


class AgentUpdate(msgspec.Struct, kw_only=True):
    """Body of an agent update; a new ``flow`` publishes a new version."""

    name: AgentName | None = None
    flow: dict[str, Any] | None = None


AgentKind = Literal["flow", "echo", "prompt"]


class Agent(msgspec.Struct, kw_only=True):
    """An agent as stored and returned (its current version)."""

    id: str
    name: str
    kind: AgentKind
    template: str | None
    version: int
    flow: dict[str, Any] | None
    warnings: list[str]
    created_at: float
    updated_at: float


class AgentVersion(msgspec.Struct, kw_only=True):
    """One published version of an agent's flow."""

    version: int
    created_at: float
    flow_hash: str


_PATH_SUFFIX = re.compile(r" - at `(\$[^`]*)`$")


def invalid_input_from(exc: msgspec.ValidationError) -> InvalidInput:
    """Turn msgspec's message ("… - at `$.a.b`") into an error carrying the field path."""
    text = str(exc)
    match = _PATH_SUFFIX.search(text)
    if match is None:
        return InvalidInput(text, "$")
    return InvalidInput(text[: match.start()], match.group(1))


def decode_json(data: bytes | str, typ: type[T]) -> T:
    """Decode a JSON request body into ``typ``; malformed input raises InvalidInput."""
    try:
        return msgspec.json.decode(data, type=typ)
    except msgspec.ValidationError as exc:
        raise invalid_input_from(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", "$") from None


def revalidate(obj: T) -> T:
    """Check a struct built in Python against the same constraints decoding applies."""
    try:
        return msgspec.convert(msgspec.to_builtins(obj), type=type(obj))
    except msgspec.ValidationError as exc:
        raise invalid_input_from(exc) from None
