"""The web console in a real headless Chromium against a real in-process server.

A tenant signs in with its API key, creates an agent from the receptionist
template and sees its flow drawn, edits a node's text into a new version, adds
a number, stores a secret (whose value never comes back), and opens its calls
and live feed; then the admin signs in and sees the tenant and the status page.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ApiServer
from voxgate.tenants.calls import CallRecord, CallRecords

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (scripts/install-sysdeps.sh installs it)",
)

pytestmark = [needs_chromium, pytest.mark.timeout(180)]

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    assert shutil.which(str(CHROMIUM))
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def _new_page(browser: Any) -> tuple[Any, list[str]]:
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Failed requests by URL (the browser's own console line does not name it).
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    page.set_default_timeout(15_000)
    return page, errors


async def _sign_in_tenant(page: Any, base: str, tenant_id: str, key: str) -> None:
    p = page
    await p.goto(f"{base}/console/")
    await p.get_by_label("Tenant ID").fill(tenant_id)
    await p.get_by_label("API key", exact=True).fill(key)
    await p.get_by_role("button", name="Sign in").click()
    await expect(p.get_by_role("heading", name="Agents", exact=True)).to_be_visible()


async def test_tenant_and_admin_journeys(api: ApiServer, browser: Any) -> None:
    base = str(api.client.make_url("")).rstrip("/")
    created = await api.client.post(
        "/system/tenants", json={"name": "Console Dental"}, headers=api.admin()
    )
    assert created.status == 201
    tenant = await created.json()
    tenant_id, key = tenant["id"], tenant["api_key"]
    page, errors = await _new_page(browser)
    p = page

    # --- sign in with the tenant key; the key stays out of the URL and the DOM
    await _sign_in_tenant(p, base, tenant_id, key)
    assert key not in p.url
    assert key not in await p.content()
    stored = await p.evaluate("() => sessionStorage.getItem('voxgate.session')")
    assert json.loads(stored)["tenantId"] == tenant_id

    # --- create an agent from the demo-receptionist template
    template_form = p.get_by_role("form", name="Create agent from template")
    await template_form.get_by_label("Name").fill("Front desk")
    await template_form.get_by_label("Template").select_option("demo-receptionist")
    await template_form.get_by_role("button", name="Create from template").click()
    await expect(p.get_by_role("status")).to_contain_text("Created agent Front desk")
    agents = await (
        await api.client.get(f"/tenants/{tenant_id}/api/agents", headers=api.bearer(key))
    ).json()
    [agent] = agents["agents"]
    assert agent["template"] == "demo-receptionist"

    # --- a bad pasted flow shows the server's error with its path
    flow_form = p.get_by_role("form", name="Create agent from flowspec")
    await flow_form.get_by_label("Name").fill("Broken")
    bad = {
        "schema": "flowspec/1",
        "id": "bad",
        "nodes": [{"id": "start", "type": "start"}, {"id": "x", "type": "warp"}],
        "edges": [],
    }
    await flow_form.get_by_label("flowspec/1 document (JSON)").fill(json.dumps(bad))
    await flow_form.get_by_role("button", name="Validate and create").click()
    alert = flow_form.get_by_role("alert")
    await expect(alert).to_contain_text("$.flow.nodes[1].type")
    await expect(alert).to_contain_text("422")

    # --- the agent's flow graph: nodes, and ports as edge labels
    await p.get_by_role("link", name="Front desk").click()
    await expect(p.get_by_role("heading", name="Front desk")).to_be_visible()
    nodes = p.locator(".react-flow__node")
    await expect(nodes.first).to_be_visible()
    node_count = len(agent["flow"]["nodes"])
    await expect(nodes).to_have_count(node_count)
    await expect(p.locator('[data-node-id="greeting"]')).to_be_visible()
    await expect(p.locator(".react-flow__edge")).to_have_count(len(agent["flow"]["edges"]))
    labels = await p.locator(".react-flow__edge-text").all_text_contents()
    assert "next" in labels and "fallback" in labels

    # --- edit the greeting's text and publish version 2
    await p.locator('[data-node-id="greeting"]').click()
    text_box = p.get_by_label("Text spoken")
    await text_box.fill("Hello from the console editor.")
    await p.get_by_role("button", name="Save as new version").click()
    await expect(p.get_by_role("status")).to_contain_text("Published version 2")
    updated = await (
        await api.client.get(
            f"/tenants/{tenant_id}/api/agents/{agent['id']}", headers=api.bearer(key)
        )
    ).json()
    assert updated["version"] == 2
    greeting = next(n for n in updated["flow"]["nodes"] if n["id"] == "greeting")
    assert greeting["text"] == "Hello from the console editor."
    await expect(p.get_by_role("cell", name="2", exact=True)).to_be_visible()

    # --- add a number routed to the agent
    await p.get_by_role("link", name="Numbers").click()
    number_form = p.get_by_role("form", name="Add number")
    await number_form.get_by_label("Number (+E.164)").fill("+15557654321")
    await number_form.get_by_label("Provider").select_option("sip")
    await number_form.get_by_role("button", name="Add number").click()
    await expect(p.get_by_role("cell", name="+15557654321", exact=True)).to_be_visible()
    numbers = await (
        await api.client.get(f"/tenants/{tenant_id}/api/numbers", headers=api.bearer(key))
    ).json()
    assert [(n["number"], n["provider"], n["agent_id"]) for n in numbers["numbers"]] == [
        ("+15557654321", "sip", agent["id"])
    ]

    # --- store a secret; its value is never rendered back
    marker = "console-secret-value-9q7z"
    await p.get_by_role("link", name="Secrets").click()
    secret_form = p.get_by_role("form", name="Write secret")
    await secret_form.get_by_label("Name").fill("twilio")
    await secret_form.get_by_label("Value (JSON object; write-only)").fill(
        json.dumps({"account_sid": "AC" + "0" * 32, "auth_token": marker})
    )
    await secret_form.get_by_role("button", name="Store secret").click()
    await expect(p.get_by_role("cell", name="twilio", exact=True)).to_be_visible()
    assert await secret_form.get_by_label("Value (JSON object; write-only)").input_value() == ""
    assert marker not in await p.content()
    await p.reload()
    await expect(p.get_by_role("cell", name="twilio", exact=True)).to_be_visible()
    assert marker not in await p.content()

    # --- calls: a stored call is listed and its detail opens
    call_id = "CA" + "c0" * 16
    await CallRecords(api.services.store).create(
        CallRecord(
            id=call_id,
            tenant_id=tenant_id,
            agent_id=agent["id"],
            provider="sip",
            from_number="+15550001111",
            to_number="+15557654321",
            status="completed",
            created_at=1_700_000_000.0,
        )
    )
    await p.get_by_role("link", name="Calls").click()
    await expect(p.get_by_role("heading", name="Calls", exact=True)).to_be_visible()
    await expect(p.get_by_role("cell", name="+15550001111", exact=True)).to_be_visible()
    await p.get_by_role("form", name="Call filters").get_by_label("Status").select_option("failed")
    await p.get_by_role("button", name="Apply").click()
    await expect(p.get_by_text("No calls yet.")).to_be_visible()
    await (
        p.get_by_role("form", name="Call filters").get_by_label("Status").select_option("completed")
    )
    await p.get_by_role("button", name="Apply").click()
    await p.locator(f'a[href$="/calls/{call_id}"]').click()
    await expect(p.get_by_role("heading", name=f"Call {call_id}")).to_be_visible()
    await expect(p.get_by_text("No recording.")).to_be_visible()

    # --- the live feed connects with the token as access_token
    await p.get_by_role("link", name="Live feed").click()
    await expect(p.get_by_text("Feed: connected")).to_be_visible()

    # --- a client route loads directly (index.html fallback) while signed in
    await p.goto(f"{base}/console/t/{tenant_id}/trunks")
    await expect(p.get_by_role("heading", name="Trunks", exact=True)).to_be_visible()
    await expect(p.get_by_text("No trunks yet.")).to_be_visible()

    # --- sign out, then the admin sees the tenant and the status page
    await p.get_by_role("button", name="Sign out").click()
    assert await p.evaluate("() => sessionStorage.getItem('voxgate.session')") is None
    await p.get_by_label("the admin token").check()
    await p.get_by_label("Admin token", exact=True).fill(api.admin_token)
    await p.get_by_role("button", name="Sign in").click()
    await expect(p.get_by_role("heading", name="Tenants", exact=True)).to_be_visible()
    await expect(p.get_by_role("cell", name=tenant_id, exact=True)).to_be_visible()
    await expect(p.get_by_role("link", name="Console Dental")).to_be_visible()
    await p.get_by_role("link", name="Status", exact=True).click()
    await expect(p.get_by_role("heading", name="System status")).to_be_visible()
    status_tenants = p.get_by_role("region", name="Tenants")
    await expect(status_tenants.get_by_role("link", name="Console Dental")).to_be_visible()
    await expect(p.get_by_role("region", name="Workers")).to_be_visible()

    # --- suspend and resume from the tenants list
    await p.get_by_role("link", name="Tenants", exact=True).click()
    row = p.get_by_role("row").filter(has_text=tenant_id)
    await row.get_by_role("button", name="Suspend").click()
    await expect(row.get_by_role("button", name="Resume")).to_be_visible()
    suspended = await (
        await api.client.get(f"/system/tenants/{tenant_id}", headers=api.admin())
    ).json()
    assert suspended["status"] == "suspended"
    await row.get_by_role("button", name="Resume").click()
    await expect(row.get_by_role("button", name="Suspend")).to_be_visible()

    # --- live system metrics over the admin WebSocket
    await p.get_by_role("link", name="Live metrics").click()
    await expect(p.get_by_text("Feed: connected")).to_be_visible()
    await expect(p.get_by_role("definition").first).to_be_visible()

    # The one failed request was the invalid flow's 422; nothing else failed or threw.
    assert [e.split(" ")[0] for e in errors] == ["422"], errors
