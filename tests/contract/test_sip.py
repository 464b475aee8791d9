"""SIP contract: OPTIONS, numbers reach their agent with and without the leading
``+``, G.711 µ/A-law and telephone-event, RFC 3581 ``rport``."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.contract.conftest import Served, call_api
from tests.contract.rawsip import Dialog, Rtp, SipClient, offer, parse_sdp
from tests.contract.test_twilio import ulaw_tone

_numbers = itertools.count(1)


@pytest.fixture
async def sip(server: Served) -> AsyncIterator[SipClient]:
    client = await SipClient.open(server.sip_addr())
    try:
        yield client
    finally:
        client.close()


async def sip_number(server: Served) -> str:
    """A new tenant with an echo agent behind a ``sip`` number."""
    admin = server.ready["admin_token"]
    async with aiohttp.ClientSession() as session:
        _, tenant = await call_api(
            session, "POST", server.http + "/system/tenants", admin, {"name": "SIP Co"}
        )
        base = f"{server.http}/tenants/{tenant['id']}/api"
        key = tenant["api_key"]
        _, agent = await call_api(
            session, "POST", base + "/agents", key, {"name": "Echo", "template": "echo"}
        )
        number = f"+1555030{next(_numbers):04d}"
        status, body = await call_api(
            session, "POST", base + "/numbers", key,
            {"number": number, "provider": "sip", "agent_id": agent["id"]},
        )  # fmt: skip
        assert status == 201, body
    return number


def uri(server: Served, user: str) -> str:
    host, port = server.sip_addr()
    return f"sip:{user}@{host}:{port}"


async def test_options_answers_200_with_rport(server: Served, sip: SipClient) -> None:
    host, port = server.sip_addr()
    answer = await sip.options(f"sip:{host}:{port}")
    assert answer.status == 200
    via = answer.header("via") or ""
    assert f"rport={sip.port}" in via, via
    assert "received=127.0.0.1" in via, via


@pytest.mark.parametrize("plus", [True, False], ids=["with-plus", "without-plus"])
async def test_number_reaches_echo_agent(server: Served, sip: SipClient, plus: bool) -> None:
    number = await sip_number(server)
    rtp = await Rtp.open()
    try:
        user = number if plus else number.lstrip("+")
        dialog = await sip.invite(uri(server, user), offer(rtp.port))
        assert isinstance(dialog, Dialog), dialog
        assert dialog.answer.status == 200
        sdp = parse_sdp(dialog.answer.body)
        assert sdp.port > 0 and sdp.payloads[0] in (0, 8)
        tone = ulaw_tone(30)
        for frame in tone:
            rtp.send((sdp.host, sdp.port), frame, 0)
        heard = bytearray()
        for _ in range(20):
            payload_type, payload = await rtp.receive()
            if payload_type == 0:
                heard += payload
        assert len(set(heard)) > 8, "no echo of the caller's audio"
        assert (await sip.bye(dialog)).status == 200
    finally:
        rtp.close()


@pytest.mark.parametrize(
    ("payloads", "codec"),
    [((8, 101), "PCMA/8000"), ((0, 101), "PCMU/8000"), ((8,), "PCMA/8000")],
)
async def test_codecs_and_telephone_event(
    server: Served, sip: SipClient, payloads: tuple[int, ...], codec: str
) -> None:
    number = await sip_number(server)
    dialog = await sip.invite(uri(server, number), offer(40000, payloads))
    assert isinstance(dialog, Dialog), dialog
    sdp = parse_sdp(dialog.answer.body)
    assert set(sdp.payloads) <= set(payloads)
    assert sdp.rtpmap.get(sdp.payloads[0], "").upper() == codec
    if 101 in payloads:
        assert re.match(r"telephone-event/8000", sdp.rtpmap.get(101, ""), re.I), sdp.rtpmap
    assert (await sip.bye(dialog)).status == 200


async def test_unknown_number_is_refused(server: Served, sip: SipClient) -> None:
    answer = await sip.invite(uri(server, "+15559999999"), offer(40002))
    assert not isinstance(answer, Dialog)
    assert answer.status == 404
