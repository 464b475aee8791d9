"""Twilio REST client against a local FAKE Twilio (tests/server/fake_twilio.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.server.fake_twilio import fake_twilio
from voxgate.server.twilio_rest import (
    TwilioAuthError,
    TwilioCredentials,
    TwilioRequestError,
    TwilioRest,
    TwilioUnavailable,
    api_base_from,
    dial_twiml,
    stream_twiml,
)


def test_twiml_builders_escape() -> None:
    doc = ET.fromstring(stream_twiml("wss://h/twilio/media", {"token": 'a"<b'}))
    stream = doc.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://h/twilio/media"
    param = stream.find("Parameter")
    assert param is not None and param.get("value") == 'a"<b'
    dial = ET.fromstring(dial_twiml("+14155550100", caller_id="+15145550100"))
    assert dial.find("./Dial/Number") is not None
    assert dial.find("./Dial").get("callerId") == "+15145550100"  # type: ignore[union-attr]
    sip = ET.fromstring(dial_twiml("sip:desk@pbx.example.com"))
    assert sip.findtext("./Dial/Sip") == "sip:desk@pbx.example.com"


def test_api_base_from_env() -> None:
    assert api_base_from({}) == "https://api.twilio.com"
    assert api_base_from({"VOXGATE_TWILIO_API_BASE": "http://127.0.0.1:9/"}) == "http://127.0.0.1:9"


async def test_create_and_update_call() -> None:
    async with fake_twilio() as fake:
        rest = TwilioRest.open(api_base=fake.base_url)
        creds = TwilioCredentials(account_sid=fake.account_sid, auth_token=fake.auth_token)
        assert fake.auth_token not in repr(creds)
        try:
            twiml = stream_twiml("wss://x/twilio/media", {"token": "t1"})
            call = await rest.create_call(
                creds, to="+14155550100", from_="+15145550100", twiml=twiml,
                status_callback="https://x/twilio/status",
            )  # fmt: skip
            assert call.sid.startswith("CA") and call.status == "queued"
            assert call.to == "+14155550100" and call.from_ == "+15145550100"
            sent = fake.requests[-1]
            assert sent.path.endswith(f"/Accounts/{fake.account_sid}/Calls.json")
            assert sent.form["Twiml"] == twiml and sent.form["StatusCallback"]

            updated = await rest.update_call(creds, call.sid, twiml=dial_twiml("+14155550111"))
            assert updated.sid == call.sid
            assert "<Dial" in fake.requests[-1].form["Twiml"]

            with pytest.raises(TwilioRequestError) as info:
                await rest.update_call(creds, "CA" + "0" * 32, twiml=dial_twiml("+1"))
            assert info.value.status == 400 and info.value.code == 21220
            with pytest.raises(TwilioRequestError):
                await rest.update_call(creds, "../etc", twiml="x")
            bad = TwilioCredentials(account_sid=fake.account_sid, auth_token="wrong")
            with pytest.raises(TwilioAuthError) as auth:
                await rest.create_call(bad, to="+1", from_="+1", twiml=twiml)
            assert "wrong" not in str(auth.value)
            with pytest.raises(TwilioAuthError):
                await rest.create_call(
                    TwilioCredentials(account_sid="nope", auth_token="x"),
                    to="+1", from_="+1", twiml=twiml,
                )  # fmt: skip
            fake.fail_status = 503
            with pytest.raises(TwilioUnavailable) as down:
                await rest.create_call(creds, to="+14155550100", from_="+1", twiml=twiml)
            assert down.value.status == 503
        finally:
            await rest.close()


async def test_unreachable_is_typed() -> None:
    async with fake_twilio() as fake:
        base = fake.base_url
    rest = TwilioRest.open(api_base=base, timeout=2.0)
    try:
        with pytest.raises(TwilioUnavailable):
            await rest.create_call(
                TwilioCredentials(account_sid="AC" + "1" * 32, auth_token="t"),
                to="+14155550100", from_="+15145550100", twiml="<Response/>",
            )  # fmt: skip
    finally:
        await rest.close()
