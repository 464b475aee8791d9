"""``python -m voxgate.server.demo`` (``make run``): serve with a ready-to-call demo.

Creates, when missing, a tenant named ``demo`` and an agent from the
``demo-receptionist`` template, then serves as ``voxgate serve`` would (same
flags).  The demo tenant's API key is printed only when the tenant is created
here: keys are stored hashed, so an existing one cannot be shown again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from voxgate.server.cli import main
from voxgate.server.runtime import Server

DEMO_TENANT = "demo"
DEMO_AGENT = "Demo receptionist"
DEMO_TEMPLATE = "demo-receptionist"


async def seed_demo(server: Server) -> None:
    """Ensure the demo tenant and agent exist; print how to reach them."""
    from voxgate.agents.templates import get_template
    from voxgate.tenants.models import TenantCreate

    services = server.services
    tenant = next((t for t in await services.registry.list() if t.name == DEMO_TENANT), None)
    api_key: str | None = None
    if tenant is None:
        created = await services.registry.create(TenantCreate(name=DEMO_TENANT), "demo")
        tenant_id, api_key = created.id, created.api_key
    else:
        tenant_id = tenant.id
    agents = await services.agents.list(tenant_id)
    agent = next((a for a in agents if a.name == DEMO_AGENT), None)
    if agent is None:
        template = get_template(DEMO_TEMPLATE)
        agent = await services.agents.create(
            tenant_id, DEMO_AGENT, template.kind, DEMO_TEMPLATE, template.flow_document(), []
        )
    assert server.ready is not None
    base = server.ready.http
    print(f"Demo tenant: {tenant_id}   demo agent: {agent.id}", flush=True)
    if api_key is not None:
        print(f"Demo tenant API key (shown once; stored hashed): {api_key}", flush=True)
    else:
        print(
            f"Demo tenant exists; for a new key run: voxgate apikey create {tenant_id}",
            flush=True,
        )
    print(f"Console: {base}/console/", flush=True)


def run(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return main(["serve", *args], on_started=[seed_demo])


if __name__ == "__main__":
    raise SystemExit(run())
