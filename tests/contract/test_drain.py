"""SIGTERM drain contract: new calls are refused (SIP 503, Twilio fallback TwiML),
the live call keeps its audio until it ends, then the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp

from tests.contract.conftest import Served, call_api, twilio_signature
from tests.contract.rawsip import Dialog, SipClient, offer
from tests.contract.test_twilio import (
    AUTH_TOKEN,
    PUBLIC,
    Stream,
    answered,
    provision,
    ulaw_tone,
    voice_form,
)


async def test_sigterm_drains_then_exits_zero(serve: Any) -> None:
    served: Served = serve(args=("--public-url", PUBLIC, "--drain-timeout", "20"))
    admin = served.ready["admin_token"]
    tone = ulaw_tone(60)
    async with aiohttp.ClientSession() as session:
        line = await provision(session, served, {"name": "Echo", "template": "echo"})
        status, _ = await call_api(
            session, "POST", f"{served.http}/tenants/{line.tenant}/api/numbers", line.key,
            {"number": "+15550500001", "provider": "sip", "agent_id": line.agent},
        )  # fmt: skip
        assert status == 201
        sid, _, params = await answered(session, served, line)
        ws = await session.ws_connect(served.ws + "/twilio/media")
        stream = Stream(ws, sid)
        await stream.start(params)
        for frame in tone[:10]:
            await stream.media(frame)
        await stream.receive_media(5)

        served.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):  # the server says when it is draining
            while True:
                status, view = await call_api(session, "GET", served.http + "/system/status", admin)
                if status == 200 and view.get("draining"):
                    break
                await asyncio.sleep(0.05)

        # A new Twilio call, on a new connection, gets the fallback TwiML, not a stream.
        form = voice_form(line, "CA" + "d" * 32)
        signature = twilio_signature(AUTH_TOKEN, PUBLIC + "/twilio/webhook", form)
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
            fresh.post(
                served.http + "/twilio/webhook", data=form,
                headers={"X-Twilio-Signature": signature},
            ) as response,
        ):  # fmt: skip
            assert response.status == 200
            twiml = await response.text()
        root = ET.fromstring(twiml)
        assert root.tag == "Response" and root.find("./Connect") is None, twiml
        assert len(root) > 0, "fallback TwiML must do something (say/dial/hangup)"

        # A new SIP call gets 503.
        client = await SipClient.open(served.sip_addr())
        try:
            host, port = served.sip_addr()
            answer = await client.invite(f"sip:+15550500001@{host}:{port}", offer(40020))
            assert not isinstance(answer, Dialog) and answer.status == 503, answer
        finally:
            client.close()

        # The live call still has its audio, then ends normally.
        for frame in tone[10:30]:
            await stream.media(frame)
        assert len(await stream.receive_media(10)) >= 1600
        await stream.stop()
        await ws.close()
    code = await asyncio.to_thread(served.proc.wait, 25)
    assert code == 0
    assert not served.ready_file.exists()
