"""Toll-fraud guard: which destinations a tenant's outbound calls and transfers may reach.

A hijacked agent or API key that dials premium-rate or far-away numbers costs
real money within minutes, so every outbound leg (API call, campaign, flow
transfer) asks :func:`evaluate` first and is refused unless the destination
is explicitly allowed:

* with no allowlist, only the tenant's own country (``home_country_code``,
  else the country of its first number, else ``1``) is allowed;
* with an allowlist, the destination must start with one of its E.164 prefixes;
* known premium-rate ranges are refused even inside an allowed prefix, unless
  ``allow_premium`` is set or a listed prefix is at least as specific as the
  premium range (an explicit, deliberate allowance);
* in the North American Numbering Plan (+1) the Caribbean and other non-US/CA
  area codes are international calls with international rates (the classic
  "one ring" fraud targets), so a +1 home country covers only US/CA and US
  territories by default.

:class:`DialPolicies` stores one policy per tenant and audits every refusal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import InvalidInput
from voxgate.tenants.models import decode_json, revalidate
from voxgate.tenants.numbers import Numbers, normalize_number
from voxgate.tenants.store import Store, require_tenant, to_bytes

# ITU-T E.164 country codes are prefix-free: 1 and 7 are one digit, these are two,
# every other assigned code has three.
_TWO_DIGIT_CC = frozenset(
    [
        "20",
        "27",
        "30",
        "31",
        "32",
        "33",
        "34",
        "36",
        "39",
        "40",
        "41",
        "43",
        "44",
        "45",
        "46",
        "47",
        "48",
        "49",
        "51",
        "52",
        "53",
        "54",
        "55",
        "56",
        "57",
        "58",
        "60",
        "61",
        "62",
        "63",
        "64",
        "65",
        "66",
        "81",
        "82",
        "84",
        "86",
        "90",
        "91",
        "92",
        "93",
        "94",
        "95",
        "98",
    ]
)

# NANP area codes outside the US and Canada that bill as international calls.
# US territories (Puerto Rico 787/939, USVI 340, Guam 671, CNMI 670, American
# Samoa 684) are domestic and deliberately absent.
NANP_INTERNATIONAL_NPAS = frozenset(
    [
        "242",
        "246",
        "264",
        "268",
        "284",
        "345",
        "441",
        "473",
        "649",
        "658",
        "664",
        "721",
        "758",
        "767",
        "784",
        "809",
        "829",
        "849",
        "868",
        "869",
        "876",
    ]
)

# Premium-rate / revenue-share ranges as E.164 prefixes (digits after "+").
# NANP 976 is an exchange (NXX) code, matched inside any area code below.
PREMIUM_PREFIXES: dict[str, str] = {
    "1900": "NANP 900 premium-rate",
    "4490": "UK 09 premium-rate",
    "4491": "UK 09 premium-rate",
    "4498": "UK 09 premium-rate (adult)",
    "44871": "UK 0871 revenue-share",
    "44872": "UK 0872 revenue-share",
    "44873": "UK 0873 revenue-share",
    "4470": "UK 070 personal numbers",
    "49900": "Germany 0900 premium-rate",
    "49137": "Germany 0137 mass-calling",
    "3389": "France 089 premium-rate",
    "3381": "France 081 shared-cost",
    "3382": "France 082 shared-cost",
    "39899": "Italy 899 premium-rate",
    "34803": "Spain 803 premium-rate",
    "34806": "Spain 806 premium-rate",
    "34807": "Spain 807 premium-rate",
    "61190": "Australia 190 premium-rate",
    "881": "Global mobile satellite",
    "882": "International networks",
    "883": "International networks",
    "870": "Inmarsat",
    "979": "International premium-rate service",
}

_PREFIX_PATTERN = r"^\+[1-9][0-9]{0,14}$"
_PREFIX = re.compile(_PREFIX_PATTERN)
_CC = re.compile(r"^[1-9][0-9]{0,2}$")

E164Prefix = Annotated[
    str,
    Meta(pattern=_PREFIX_PATTERN, description="An E.164 prefix such as +1, +44 or +1416."),
]
CountryCode = Annotated[
    str, Meta(pattern=r"^[1-9][0-9]{0,2}$", description="E.164 country code without +.")
]


def country_code(e164: str) -> str:
    """The country calling code of a ``+E.164`` number (``+14155550100`` -> ``1``)."""
    digits = e164.lstrip("+")
    if digits[:1] in ("1", "7"):
        return digits[:1]
    if digits[:2] in _TWO_DIGIT_CC:
        return digits[:2]
    return digits[:3]


def premium_range(e164: str) -> tuple[str, str] | None:
    """``(prefix digits, description)`` of the premium range ``e164`` falls in, if any."""
    digits = e164.lstrip("+")
    for length in range(min(5, len(digits)), 2, -1):
        label = PREMIUM_PREFIXES.get(digits[:length])
        if label is not None:
            return digits[:length], label
    if digits.startswith("1") and len(digits) == 11 and digits[4:7] == "976":
        return digits[:7], "NANP 976 premium-rate exchange"
    return None


def _nanp_international(e164: str) -> bool:
    digits = e164.lstrip("+")
    return digits.startswith("1") and digits[1:4] in NANP_INTERNATIONAL_NPAS


class DialPolicy(msgspec.Struct, kw_only=True):
    """A tenant's outbound destination rules (``GET/PUT …/dial-policy``)."""

    home_country_code: CountryCode | None = None
    allowed_prefixes: Annotated[
        list[E164Prefix],
        Meta(
            max_length=200,
            description="Destinations allowed; empty means the home country only.",
        ),
    ] = msgspec.field(default_factory=list)
    allow_premium: bool = False


class DialPolicyView(msgspec.Struct, kw_only=True):
    """A stored policy plus the home country actually in effect."""

    home_country_code: str | None
    effective_home_country_code: str
    allowed_prefixes: list[str]
    allow_premium: bool


class Allowed(msgspec.Struct, frozen=True, kw_only=True):
    """The destination may be dialled; ``number`` is its normalised +E.164 form."""

    number: str


RefusalReason = Literal["invalid_number", "premium_rate", "international", "not_allowed"]


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    """The destination is blocked; ``reason`` is stable, ``message`` is for humans."""

    reason: RefusalReason
    message: str


Verdict = Allowed | Refused


def evaluate(policy: DialPolicy, destination: str, home_country_code: str = "1") -> Verdict:
    """Apply ``policy`` to ``destination`` (with or without ``+``); pure, no I/O.

    ``home_country_code`` is the fallback when the policy names none.
    """
    number = normalize_number(destination) if isinstance(destination, str) else None
    if number is None:
        return Refused(reason="invalid_number", message="destination is not an E.164 number")
    premium = premium_range(number)
    if premium is not None:
        digits, label = premium
        explicit = any(p.lstrip("+").startswith(digits) for p in policy.allowed_prefixes)
        if not (policy.allow_premium or explicit):
            return Refused(reason="premium_rate", message=f"{label} destinations are blocked")
    if policy.allowed_prefixes:
        if any(number.startswith(p) for p in policy.allowed_prefixes):
            return Allowed(number=number)
        return Refused(
            reason="not_allowed", message="destination matches no allowed prefix of this tenant"
        )
    home = policy.home_country_code or home_country_code
    if country_code(number) != home or (home == "1" and _nanp_international(number)):
        return Refused(
            reason="international",
            message=f"only +{home} destinations are allowed without an allowlist",
        )
    return Allowed(number=number)


def _policy_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "dial_policy")


class DialPolicies:
    """Per-tenant dial policies: read, replace, and check destinations (auditing refusals)."""

    def __init__(
        self, store: Store, numbers: Numbers, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._numbers = numbers
        self._audit = AuditLog(store, clock=clock)

    async def get(self, tenant_id: str) -> DialPolicy:
        """The tenant's policy (the default one if none was stored)."""
        key = _policy_key(tenant_id)
        await require_tenant(self._store, tenant_id)
        async with self._store.guard():
            raw = await self._store.redis.get(key)
        return DialPolicy() if raw is None else decode_json(to_bytes(raw), DialPolicy)

    async def home_country(self, tenant_id: str, policy: DialPolicy | None = None) -> str:
        """The policy's home country, else its first number's country, else ``1``."""
        policy = policy if policy is not None else await self.get(tenant_id)
        if policy.home_country_code:
            return policy.home_country_code
        numbers = await self._numbers.list(tenant_id)
        return country_code(numbers[0].number) if numbers else "1"

    async def view(self, tenant_id: str) -> DialPolicyView:
        """The stored policy with its effective home country resolved."""
        policy = await self.get(tenant_id)
        return DialPolicyView(
            home_country_code=policy.home_country_code,
            effective_home_country_code=await self.home_country(tenant_id, policy),
            allowed_prefixes=list(policy.allowed_prefixes),
            allow_premium=policy.allow_premium,
        )

    async def put(self, tenant_id: str, policy: DialPolicy, actor: str = "system") -> DialPolicy:
        """Replace the tenant's policy; prefixes are de-duplicated and kept in order."""
        policy = revalidate(policy)
        for index, prefix in enumerate(policy.allowed_prefixes):
            if not _PREFIX.match(prefix):
                raise InvalidInput("not an E.164 prefix", f"$.allowed_prefixes[{index}]")
        if policy.home_country_code is not None and not _CC.match(policy.home_country_code):
            raise InvalidInput("not a country code", "$.home_country_code")
        policy.allowed_prefixes = list(dict.fromkeys(policy.allowed_prefixes))
        key = _policy_key(tenant_id)
        await require_tenant(self._store, tenant_id)
        async with self._store.guard():
            await self._store.redis.set(key, msgspec.json.encode(policy))
        await self._audit.append(
            tenant_id,
            actor,
            "dial_policy.put",
            "dial_policy",
            {
                "allowed_prefixes": ",".join(policy.allowed_prefixes),
                "allow_premium": str(policy.allow_premium).lower(),
                "home_country_code": policy.home_country_code or "",
            },
        )
        return policy

    async def check(
        self, tenant_id: str, destination: str, *, actor: str = "system", purpose: str = "call"
    ) -> Verdict:
        """Evaluate ``destination`` for the tenant; a refusal is written to its audit log.

        ``purpose`` (``call``, ``transfer``, ``campaign``) only labels the audit entry.
        """
        policy = await self.get(tenant_id)
        verdict = evaluate(policy, destination, await self.home_country(tenant_id, policy))
        if isinstance(verdict, Refused):
            await self._audit.append(
                tenant_id,
                actor,
                "dial.refused",
                str(destination)[:64],
                {"reason": verdict.reason, "purpose": purpose, "message": verdict.message},
            )
        return verdict
