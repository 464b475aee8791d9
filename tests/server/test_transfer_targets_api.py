"""``GET/PUT …/transfer-targets`` and transfers by target name through the orchestrator."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.server.test_outbound import FakeDialer
from tests.server.test_trunks_api import _tenant, client
from voxgate.server.outbound import DialRefused, TransferFailed
from voxgate.server.routes_trunks import OUTBOUND

__all__ = ["client"]


async def test_targets_api_and_transfer_by_name(
    client: tuple[TestClient, FakeDialer],  # type: ignore[type-arg]
) -> None:
    http, dialer = client
    tenant_id, auth = await _tenant(http, "a")
    other_id, other_auth = await _tenant(http, "b")
    base = f"/tenants/{tenant_id}/api/transfer-targets"
    response = await http.get(base, headers=auth)
    assert response.status == 200 and await response.json() == {"targets": {}}
    response = await http.put(base, json={"targets": {"operator": "14155550100"}}, headers=auth)
    assert response.status == 422  # not +E.164
    response = await http.put(base, json={"targets": {"Op Erator": "+14155550100"}}, headers=auth)
    assert response.status == 422
    body = {"targets": {"operator": "+14155550100", "premium": "+19005550100"}}
    response = await http.put(base, json=body, headers=auth)
    assert response.status == 200 and await response.json() == body
    assert (await (await http.get(base, headers=auth)).json()) == body
    # Tenant isolation: another tenant's key cannot read these, and has none of its own.
    assert (await http.get(base, headers=other_auth)).status in (401, 403, 404)
    other = await http.get(f"/tenants/{other_id}/api/transfer-targets", headers=other_auth)
    assert await other.json() == {"targets": {}}

    orchestrator = http.server.app[OUTBOUND].orchestrator
    assert orchestrator is not None
    assert await orchestrator.transfer(tenant_id, "call_x", "operator", provider="sip") == (
        "+14155550100"
    )
    assert dialer.transfers == [("call_x", "+14155550100")]
    with pytest.raises(DialRefused):  # a name does not get around the dial policy
        await orchestrator.transfer(tenant_id, "call_x", "premium", provider="sip")
    with pytest.raises(TransferFailed):
        await orchestrator.transfer(tenant_id, "call_x", "billing", provider="sip")
    with pytest.raises(TransferFailed):  # names are per tenant
        await orchestrator.transfer(other_id, "call_y", "operator", provider="sip")
    assert len(dialer.transfers) == 1
