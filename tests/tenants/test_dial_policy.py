from __future__ import annotations

import pytest

from voxgate.tenants.agents import AgentStore
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.dial_policy import (
    Allowed,
    DialPolicies,
    DialPolicy,
    Refused,
    country_code,
    evaluate,
    premium_range,
)
from voxgate.tenants.errors import InvalidInput, NotFound
from voxgate.tenants.models import NumberCreate, TenantCreate
from voxgate.tenants.numbers import Numbers
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.store import Store


def test_country_codes() -> None:
    assert country_code("+14155550100") == "1"
    assert country_code("+74951234567") == "7"
    assert country_code("+442071838750") == "44"
    assert country_code("+4930123456") == "49"
    assert country_code("+35312345678") == "353"
    assert country_code("+8801712345678") == "880"


def test_premium_ranges() -> None:
    assert premium_range("+19005551234") is not None
    assert premium_range("+12129765555") is not None  # 976 exchange in any area code
    assert premium_range("+441632960000") is None
    assert premium_range("+449012345678") is not None
    assert premium_range("+8816123456") is not None
    assert premium_range("+14155550100") is None


def reason(verdict: Allowed | Refused) -> str:
    return "allowed" if isinstance(verdict, Allowed) else verdict.reason


def test_default_is_home_country_only() -> None:
    policy = DialPolicy()
    assert evaluate(policy, "+14155550100") == Allowed(number="+14155550100")
    assert evaluate(policy, "14155550100") == Allowed(number="+14155550100")
    assert reason(evaluate(policy, "+442071838750")) == "international"
    # Canada and US territories are domestic; the Caribbean bills as international.
    assert reason(evaluate(policy, "+14165550100")) == "allowed"
    assert reason(evaluate(policy, "+17875550100")) == "allowed"
    assert reason(evaluate(policy, "+18765550100")) == "international"
    assert reason(evaluate(policy, "+12845550100")) == "international"
    # Another home country.
    assert reason(evaluate(policy, "+442071838750", home_country_code="44")) == "allowed"
    assert reason(evaluate(policy, "+14155550100", home_country_code="44")) == "international"
    assert reason(evaluate(DialPolicy(home_country_code="44"), "+442071838750")) == "allowed"


def test_premium_blocked_even_at_home() -> None:
    assert reason(evaluate(DialPolicy(), "+19005551234")) == "premium_rate"
    assert reason(evaluate(DialPolicy(), "+12129765555")) == "premium_rate"
    assert reason(evaluate(DialPolicy(allowed_prefixes=["+1"]), "+19005551234")) == "premium_rate"
    assert reason(evaluate(DialPolicy(allow_premium=True), "+19005551234")) == "allowed"
    # Listing the premium range itself is a deliberate allowance.
    explicit = DialPolicy(allowed_prefixes=["+1900"])
    assert reason(evaluate(explicit, "+19005551234")) == "allowed"
    assert reason(evaluate(explicit, "+14155550100")) == "not_allowed"


def test_allowlist() -> None:
    policy = DialPolicy(allowed_prefixes=["+1416", "+44"])
    assert reason(evaluate(policy, "+14165550100")) == "allowed"
    assert reason(evaluate(policy, "+442071838750")) == "allowed"
    assert reason(evaluate(policy, "+14155550100")) == "not_allowed"
    assert reason(evaluate(policy, "+449012345678")) == "premium_rate"
    # An explicit allowlist may include Caribbean NANP codes.
    assert reason(evaluate(DialPolicy(allowed_prefixes=["+1876"]), "+18765550100")) == "allowed"


@pytest.mark.parametrize("bad", ["", "+", "12", "abc", "+0123456789", "+1415555010012345"])
def test_invalid_destinations(bad: str) -> None:
    assert reason(evaluate(DialPolicy(), bad)) == "invalid_number"


async def _tenant(store: Store, master_key: bytes) -> str:
    return (await TenantRegistry(store, master_key).create(TenantCreate(name="A"), "a")).id


async def test_store_and_check_audits_refusals(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    numbers = Numbers(store)
    policies = DialPolicies(store, numbers)
    assert await policies.get(tenant_id) == DialPolicy()
    assert (await policies.view(tenant_id)).effective_home_country_code == "1"

    # The first number's country becomes the home country.
    agent = await AgentStore(store).create(tenant_id, "Echo", "echo", "echo", None, [])
    await numbers.create(
        tenant_id, NumberCreate(number="+442071838750", provider="sip", agent_id=agent.id)
    )
    assert await policies.home_country(tenant_id) == "44"
    assert isinstance(await policies.check(tenant_id, "+442071838751"), Allowed)
    refused = await policies.check(tenant_id, "+14155550100", actor="apikey", purpose="transfer")
    assert isinstance(refused, Refused) and refused.reason == "international"
    entries = await AuditLog(store).list(tenant_id)
    assert entries[0].action == "dial.refused"
    assert entries[0].target == "+14155550100"
    assert entries[0].detail["purpose"] == "transfer"
    assert entries[0].actor == "apikey"

    stored = await policies.put(
        tenant_id, DialPolicy(home_country_code="1", allowed_prefixes=["+1", "+1", "+33"])
    )
    assert stored.allowed_prefixes == ["+1", "+33"]
    assert await policies.get(tenant_id) == stored
    assert isinstance(await policies.check(tenant_id, "+33142685300"), Allowed)
    view = await policies.view(tenant_id)
    assert view.effective_home_country_code == "1" and view.allowed_prefixes == ["+1", "+33"]


async def test_validation_and_isolation(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    other = await _tenant(store, master_key)
    policies = DialPolicies(store, Numbers(store))
    with pytest.raises(InvalidInput) as info:
        await policies.put(tenant_id, DialPolicy(allowed_prefixes=["+1", "44"]))
    assert info.value.path == "$.allowed_prefixes[1]"
    with pytest.raises(InvalidInput):
        await policies.put(tenant_id, DialPolicy(home_country_code="0"))
    with pytest.raises(NotFound):
        await policies.get("t_missing")
    with pytest.raises(NotFound):
        await policies.get("BAD ID")
    await policies.put(tenant_id, DialPolicy(allow_premium=True))
    assert (await policies.get(other)).allow_premium is False
