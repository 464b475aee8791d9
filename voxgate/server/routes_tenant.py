"""Tenant API under ``/tenants/{tenant_id}/api/``: agents, templates, numbers, secrets,
API keys, audit log and quotas.

The auth middleware has already checked that the caller may act on ``tenant_id``
(its own key, or the admin token), so handlers only ever touch that tenant's data;
every service call is scoped by ``call.tenant_id``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

import msgspec

from voxgate.agents.flowspec import FlowValidationError, FlowWarning, flow_to_dict, parse_flow
from voxgate.agents.templates import TemplateNotFoundError, get_template, list_templates
from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, QueryParam, RouteTable
from voxgate.server.services import Services
from voxgate.server.state import CONFIG, SERVICES
from voxgate.server.worker_agent import SPEECH
from voxgate.tenants.errors import NotFound
from voxgate.tenants.models import (
    SECRET_NAME_PATTERN,
    Agent,
    AgentCreate,
    AgentUpdate,
    AgentVersion,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    AuditEntry,
    Number,
    NumberCreate,
    Quotas,
    SecretList,
)

BASE = "/tenants/{tenant_id}/api"
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)


class AgentList(msgspec.Struct, kw_only=True):
    agents: list[Agent]


class AgentVersionList(msgspec.Struct, kw_only=True):
    versions: list[AgentVersion]


class TemplateView(msgspec.Struct, kw_only=True):
    """A built-in template an agent can be created from."""

    name: str
    kind: str
    description: str


class TemplateList(msgspec.Struct, kw_only=True):
    templates: list[TemplateView]


class NumberList(msgspec.Struct, kw_only=True):
    numbers: list[Number]


class ApiKeyList(msgspec.Struct, kw_only=True):
    keys: list[ApiKeyInfo]


class AuditList(msgspec.Struct, kw_only=True):
    entries: list[AuditEntry]


# A secret's value: any JSON object (e.g. ``{"account_sid", "auth_token"}``).
SecretValue = Annotated[dict[str, Any], msgspec.Meta(description="The secret as a JSON object.")]


def _services(call: Call[Any]) -> Services:
    return call.request.app[SERVICES]


def _warning_text(warning: FlowWarning) -> str:
    return f"{warning.path}: {warning.message}"


def _validated_flow(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Validate a ``flowspec/1`` document; errors name the field under ``$.flow``."""
    try:
        spec, warnings = parse_flow(doc)
    except FlowValidationError as exc:
        path = "$.flow" + exc.path.removeprefix("$")
        raise ApiError(422, "invalid_flow", exc.message, path) from None
    return flow_to_dict(spec), [_warning_text(w) for w in warnings]


def _publish_prompts(call: Call[Any], agent: Agent) -> None:
    """A new flow version is live: render its static prompts now, off the media core."""
    speech = call.request.app.get(SPEECH)
    if speech is not None and agent.kind == "flow" and call.request.app[CONFIG].render_prompts:
        speech.prompts.schedule(call.tenant_id, agent.flow)


def register(table: RouteTable) -> None:
    """Declare the tenant API routes on ``table``."""
    agents_tags = ("agents",)

    @table.route(
        "GET", f"{BASE}/agents", auth=Auth.TENANT, response=AgentList, summary="List agents",
        tags=agents_tags,
    )  # fmt: skip
    async def list_agents(call: Call[None]) -> AgentList:
        return AgentList(agents=await _services(call).agents.list(call.tenant_id))

    @table.route(
        "POST", f"{BASE}/agents", auth=Auth.TENANT, body=AgentCreate, response=Agent,
        status=201, errors=(409,), tags=agents_tags,
        summary="Create an agent from a template or a flowspec/1 document; live at once",
    )  # fmt: skip
    async def create_agent(call: Call[AgentCreate]) -> Agent:
        body = call.body
        flow: dict[str, Any] | None
        if body.template is not None:
            try:
                template = await asyncio.to_thread(get_template, body.template)
            except TemplateNotFoundError:
                raise ApiError(
                    422, "invalid", f"no template named {body.template!r}", "$.template"
                ) from None
            kind = template.kind
            flow = template.flow_document()
            warnings: list[str] = []
        else:
            assert body.flow is not None  # AgentCreate guarantees exactly one of the two
            kind = "flow"
            flow, warnings = _validated_flow(body.flow)
        agent = await _services(call).agents.create(
            call.tenant_id, body.name, kind, body.template, flow, warnings, call.actor
        )
        _publish_prompts(call, agent)
        return agent

    @table.route(
        "GET", f"{BASE}/agents/{{agent_id}}", auth=Auth.TENANT, response=Agent,
        summary="One agent (current version)", tags=agents_tags,
    )  # fmt: skip
    async def get_agent(call: Call[None]) -> Agent:
        return await _services(call).agents.get(call.tenant_id, call.param("agent_id"))

    @table.route(
        "PATCH", f"{BASE}/agents/{{agent_id}}", auth=Auth.TENANT, body=AgentUpdate,
        response=Agent, tags=agents_tags,
        summary="Rename an agent or publish a new flow version",
    )  # fmt: skip
    async def update_agent(call: Call[AgentUpdate]) -> Agent:
        agent_id = call.param("agent_id")
        services = _services(call)
        flow: dict[str, Any] | None = None
        warnings: list[str] | None = None
        if call.body.flow is not None:
            current = await services.agents.get(call.tenant_id, agent_id)
            if current.kind != "flow":
                raise ApiError(422, "invalid", f"a {current.kind} agent has no flow", "$.flow")
            flow, warnings = _validated_flow(call.body.flow)
        agent = await services.agents.update(
            call.tenant_id,
            agent_id,
            name=call.body.name,
            flow=flow,
            warnings=warnings,
            actor=call.actor,
        )
        if flow is not None:
            _publish_prompts(call, agent)
        return agent

    @table.route(
        "DELETE", f"{BASE}/agents/{{agent_id}}", auth=Auth.TENANT, status=204,
        summary="Delete an agent", tags=agents_tags,
    )  # fmt: skip
    async def delete_agent(call: Call[None]) -> None:
        await _services(call).agents.delete(call.tenant_id, call.param("agent_id"), call.actor)

    @table.route(
        "GET", f"{BASE}/agents/{{agent_id}}/versions", auth=Auth.TENANT,
        response=AgentVersionList, summary="Published versions of an agent", tags=agents_tags,
    )  # fmt: skip
    async def list_agent_versions(call: Call[None]) -> AgentVersionList:
        versions = await _services(call).agents.versions(call.tenant_id, call.param("agent_id"))
        return AgentVersionList(versions=versions)

    @table.route(
        "GET", f"{BASE}/templates", auth=Auth.TENANT, response=TemplateList,
        summary="Built-in agent templates", tags=agents_tags,
    )  # fmt: skip
    async def list_agent_templates(call: Call[None]) -> TemplateList:
        templates = await asyncio.to_thread(list_templates)
        return TemplateList(
            templates=[
                TemplateView(name=t.name, kind=t.kind, description=t.description) for t in templates
            ]
        )

    numbers_tags = ("numbers",)

    @table.route(
        "GET", f"{BASE}/numbers", auth=Auth.TENANT, response=NumberList,
        summary="Phone numbers mapped to agents", tags=numbers_tags,
    )  # fmt: skip
    async def list_numbers(call: Call[None]) -> NumberList:
        return NumberList(numbers=await _services(call).numbers.list(call.tenant_id))

    @table.route(
        "POST", f"{BASE}/numbers", auth=Auth.TENANT, body=NumberCreate, response=Number,
        status=201, errors=(409,), tags=numbers_tags,
        summary="Map a +E.164 number to one of the tenant's agents (409 if taken)",
    )  # fmt: skip
    async def create_number(call: Call[NumberCreate]) -> Number:
        services = _services(call)
        try:
            await services.agents.get(call.tenant_id, call.body.agent_id)
        except NotFound:
            raise ApiError(422, "invalid", "no such agent", "$.agent_id") from None
        return await services.numbers.create(call.tenant_id, call.body, call.actor)

    @table.route(
        "DELETE", f"{BASE}/numbers/{{number_id}}", auth=Auth.TENANT, status=204,
        summary="Unmap a number", tags=numbers_tags,
    )  # fmt: skip
    async def delete_number(call: Call[None]) -> None:
        await _services(call).numbers.delete(call.tenant_id, call.param("number_id"), call.actor)

    secrets_tags = ("secrets",)

    @table.route(
        "GET", f"{BASE}/secrets", auth=Auth.TENANT, response=SecretList,
        summary="Names of stored secrets (values are never returned)", tags=secrets_tags,
    )  # fmt: skip
    async def list_secrets(call: Call[None]) -> SecretList:
        return await _services(call).secrets.list(call.tenant_id)

    @table.route(
        "PUT", f"{BASE}/secrets/{{name}}", auth=Auth.TENANT, body=SecretValue, status=204,
        summary="Write a secret (write-only; name `[a-z0-9_-]{1,64}`)", tags=secrets_tags,
    )  # fmt: skip
    async def put_secret(call: Call[dict[str, Any]]) -> None:
        name = _secret_name(call)
        await _services(call).secrets.put(call.tenant_id, name, call.body, call.actor)

    @table.route(
        "DELETE", f"{BASE}/secrets/{{name}}", auth=Auth.TENANT, status=204,
        summary="Delete a secret", tags=secrets_tags,
    )  # fmt: skip
    async def delete_secret(call: Call[None]) -> None:
        await _services(call).secrets.delete(call.tenant_id, _secret_name(call), call.actor)

    keys_tags = ("keys",)

    @table.route(
        "GET", f"{BASE}/keys", auth=Auth.TENANT, response=ApiKeyList,
        summary="API keys (prefixes and usage, never the keys)", tags=keys_tags,
    )  # fmt: skip
    async def list_keys(call: Call[None]) -> ApiKeyList:
        return ApiKeyList(keys=await _services(call).apikeys.list(call.tenant_id))

    @table.route(
        "POST", f"{BASE}/keys", auth=Auth.TENANT, body=ApiKeyCreate, body_optional=True,
        response=ApiKeyCreated, status=201, tags=keys_tags,
        summary="Create an API key (shown once)",
    )  # fmt: skip
    async def create_key(call: Call[ApiKeyCreate]) -> ApiKeyCreated:
        return await _services(call).apikeys.create(call.tenant_id, call.body, call.actor)

    @table.route(
        "DELETE", f"{BASE}/keys/{{key_id}}", auth=Auth.TENANT, status=204,
        summary="Revoke an API key (stops working at once)", tags=keys_tags,
    )  # fmt: skip
    async def revoke_key(call: Call[None]) -> None:
        await _services(call).apikeys.revoke(call.tenant_id, call.param("key_id"), call.actor)

    @table.route(
        "GET", f"{BASE}/audit", auth=Auth.TENANT, response=AuditList, tags=("audit",),
        summary="Audit log, newest first",
        query=(
            QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            QueryParam("before", {"type": "string"}, "Entry id to page back from"),
        ),
    )  # fmt: skip
    async def list_audit(call: Call[None]) -> AuditList:
        limit_text = call.request.query.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise ApiError(422, "invalid", "limit must be an integer 1..1000", "limit")
        before = call.request.query.get("before") or None
        entries = await _services(call).audit.list(
            call.tenant_id, limit=int(limit_text), before=before
        )
        return AuditList(entries=entries)

    @table.route(
        "GET", f"{BASE}/quotas", auth=Auth.TENANT, response=Quotas, tags=("quotas",),
        summary="The tenant's quotas",
    )  # fmt: skip
    async def get_quotas(call: Call[None]) -> Quotas:
        tenant = await _services(call).registry.get(call.tenant_id)
        return tenant.quotas


def _secret_name(call: Call[Any]) -> str:
    name = call.param("name")
    if not _SECRET_NAME.match(name):
        raise ApiError(422, "invalid", "secret names are [a-z0-9_-]{1,64}", "name")
    return name
