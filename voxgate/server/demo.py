"""``python -m voxgate.server.demo`` (``make run``): serve with a ready-to-call demo.

Creates, when missing, a tenant named ``demo`` and an agent from the
``demo-receptionist`` template, then serves as ``voxgate serve`` would (same
flags).  Once everything listens it prints one short block saying what to do
next: a one-time console sign-in link, the agent to press Call on, and two
curl lines with a demo API key.

Keys are stored hashed, so an old one cannot be shown again: every start
revokes the previous demo key (label :data:`DEMO_KEY_LABEL`) and prints a new
one, so exactly one demo key is ever live.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import msgspec

from voxgate.server.cli import announce, main
from voxgate.server.runtime import ReadyInfo, Server

DEMO_TENANT = "demo"
DEMO_AGENT = "Demo receptionist"
DEMO_TEMPLATE = "demo-receptionist"
DEMO_KEY_LABEL = "demo key (make run)"
SIGNIN_TTL = 600.0


class DemoAccess(msgspec.Struct, kw_only=True, frozen=True):
    """What the start-up block shows; the key and code are shown once, never stored."""

    tenant_id: str
    agent_id: str
    api_key: str
    signin_code: str
    created: bool


async def seed_demo(server: Server) -> DemoAccess:
    """Ensure the demo tenant and agent exist; mint this start's key and sign-in code."""
    from voxgate.agents.templates import get_template
    from voxgate.server.console_signin import issue_signin_code
    from voxgate.tenants.models import ApiKeyCreate, TenantCreate

    services = server.services
    tenant = next((t for t in await services.registry.list() if t.name == DEMO_TENANT), None)
    created = tenant is None
    if tenant is None:
        made = await services.registry.create(TenantCreate(name=DEMO_TENANT), "demo")
        tenant_id = made.id
        # The tenant's first key is not the demo key; it is not printed and not needed.
        for info in await services.apikeys.list(tenant_id):
            await services.apikeys.revoke(tenant_id, info.id, "demo")
    else:
        tenant_id = tenant.id
    agents = await services.agents.list(tenant_id)
    agent = next((a for a in agents if a.name == DEMO_AGENT), None)
    if agent is None:
        template = get_template(DEMO_TEMPLATE)
        agent = await services.agents.create(
            tenant_id, DEMO_AGENT, template.kind, DEMO_TEMPLATE, template.flow_document(), []
        )
    for info in await services.apikeys.list(tenant_id):
        if info.label == DEMO_KEY_LABEL and not info.revoked:
            await services.apikeys.revoke(tenant_id, info.id, "demo")
    key = await services.apikeys.create(tenant_id, ApiKeyCreate(label=DEMO_KEY_LABEL))
    code = await issue_signin_code(services, tenant_id, ttl=SIGNIN_TTL)
    return DemoAccess(
        tenant_id=tenant_id,
        agent_id=agent.id,
        api_key=key.api_key,
        signin_code=code,
        created=created,
    )


def next_steps(base: str, access: DemoAccess) -> str:
    """The block ``make run`` prints once the server is up."""
    tenant, key = access.tenant_id, access.api_key
    api = f"{base}/tenants/{tenant}/api"
    minutes = int(SIGNIN_TTL // 60)
    return "\n".join(
        [
            "",
            "voxgate is ready" + (" (demo tenant created)" if access.created else "") + ".",
            f"  1. Open the console (one-time sign-in link, valid {minutes} min):",
            f"     {base}/console/#signin={access.signin_code}",
            f'  2. Press "Call" on "{DEMO_AGENT}" and talk to it (allow the microphone).',
            "  3. Or use the API with the demo key (a new one each start):",
            f"     KEY={key}",
            f'     curl -s {api}/agents -H "Authorization: Bearer $KEY"',
            f'     curl -s -X POST {api}/agents -H "Authorization: Bearer $KEY" '
            """-d '{"name": "Echo", "template": "echo"}'""",
            "  Ctrl-C stops the server; the next `make run` resumes on the same data.",
            "",
        ]
    )


def run(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    seeded: list[DemoAccess] = []

    async def seed(server: Server) -> None:
        seeded.append(await seed_demo(server))

    def announce_demo(ready: ReadyInfo) -> None:
        announce(ready)
        if seeded:
            print(next_steps(ready.http, seeded[-1]), flush=True)

    return main(["serve", *args], on_started=[seed], announcer=announce_demo)


if __name__ == "__main__":
    raise SystemExit(run())
