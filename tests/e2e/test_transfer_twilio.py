"""A flow's transfer node on a real Twilio-path call (real speech worker) against the FAKE
Twilio REST API: the call is updated with <Dial> TwiML, or refused by the dial policy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loadtest.twilio_caller import CallReport, run_call
from tests.e2e.conftest import SpeechEnv
from tests.server.fake_twilio import fake_twilio
from voxgate.server.routes_trunks import OUTBOUND
from voxgate.server.twilio_rest import TwilioRest
from voxgate.tenants.calls import CallRecords
from voxgate.tenants.transfer_targets import TransferTargets, TransferTargetStore


def _words(text: str) -> str:
    return " ".join("".join(c.lower() if c.isalnum() else " " for c in text).split())


async def _transfer_call(
    speech_env: SpeechEnv, operator: str, transcribe: Callable[[bytes], str]
) -> tuple[list[dict[str, str]], CallReport, str]:
    line = speech_env.lines[0]
    await TransferTargetStore(speech_env.services.store).put(
        line.tenant_id, TransferTargets(targets={"operator": operator})
    )
    orchestrator = speech_env.client.server.app[OUTBOUND].orchestrator
    assert orchestrator is not None
    async with fake_twilio() as fake:
        fake.account_sid, fake.auth_token = line.account_sid, line.auth_token
        fake.any_call_live = True
        real, orchestrator.twilio = orchestrator.twilio, TwilioRest.open(api_base=fake.base_url)
        try:
            config = speech_env.caller(
                line,
                audio=("speak_to_person",),
                wait_for_greeting=True,
                keep_audio=True,
                gap_max_s=1.2,
                silence_after_s=14.0,
                max_call_s=50.0,
            )
            result = await run_call(config)
        finally:
            assert orchestrator.twilio is not None
            await orchestrator.twilio.close()
            orchestrator.twilio = real
        assert result.report.error is None, result.report.error
        heard = _words(await asyncio.to_thread(transcribe, result.received_audio))
        return [r.form for r in fake.requests], result.report, heard


async def test_transfer_node_dials_the_operator_through_twilio(
    speech_env: SpeechEnv, transcribe: Callable[[bytes], str]
) -> None:
    forms, report, heard = await _transfer_call(speech_env, "+15550100222", transcribe)
    assert len(forms) == 1, forms
    assert "<Dial" in forms[0]["Twiml"] and "<Number>+15550100222</Number>" in forms[0]["Twiml"]
    assert report.ended_by == "server"  # the stream ended with the transfer
    assert "put you through" in heard and "sorry" not in heard, heard
    line = speech_env.lines[0]
    detail = await CallRecords(speech_env.services.store).detail(line.tenant_id, report.call_sid)
    kinds = {e.kind: e.detail for e in detail.events}
    assert kinds.get("transfer") == "+15550100222" and kinds.get("transferred") == "+15550100222"


async def test_refused_destination_is_audited_and_the_fallback_runs(
    speech_env: SpeechEnv, transcribe: Callable[[bytes], str]
) -> None:
    forms, report, heard = await _transfer_call(speech_env, "+442071838750", transcribe)
    assert forms == []  # Twilio was never asked
    assert report.ended_by == "server"  # the fallback hung up
    assert "sorry" in heard and "try again later" in heard, heard
    line = speech_env.lines[0]
    entries = await speech_env.services.audit.list(line.tenant_id)
    refused = [e for e in entries if e.action == "dial.refused"]
    assert refused and refused[0].detail == {
        **refused[0].detail,
        "purpose": "transfer",
        "reason": "international",
    }
