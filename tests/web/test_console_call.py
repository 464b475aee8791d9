"""Calling an agent from the console in a real headless Chromium.

The main journey runs against a real server with real speech workers: the
tenant signs in through a one-time link, presses Call on the receptionist, and
Chromium's fake microphone plays a WAV made from the fixtures (silence while the
greeting plays, then "What are your opening hours on Saturday?").  The page
must show the greeting and the Saturday hours reply as they happen, with the
turn's latency, then hang up.  The other tests cover what a caller sees when
something is wrong: a used sign-in link, a denied or missing microphone, and
the server refusing the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from tests.conftest import ApiServer
from tests.e2e.conftest import start_speech_env
from tests.server.test_webrtc import call_left
from tests.web.test_console_browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from voxgate.server.call_control import CALLS
from voxgate.server.console_signin import issue_signin_code

pytestmark = [needs_chromium, pytest.mark.timeout(300)]

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

AUDIO = Path(__file__).resolve().parents[1] / "data" / "audio"
DOCS = Path(__file__).resolve().parents[2] / "docs"
FAKE_RATE = 48_000
# Chromium's fake microphone starts with getUserMedia; the receptionist's
# greeting (about 8 s of speech) must be over before the question starts, or
# the question barges in on it.
LEAD_SILENCE_S = 14.0
# The file loops; silence after the question keeps it from being asked twice.
TAIL_SILENCE_S = 60.0

# Chromium's fake media devices: a fake microphone, no permission prompt.
FAKE_MEDIA = ["--use-fake-device-for-media-stream"]
AUTO_ALLOW = ["--use-fake-ui-for-media-stream"]

Launch = Callable[[list[str]], Awaitable[Any]]


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    """Start Chromium with extra flags (closed at the end of the test)."""
    browsers: list[Any] = []
    async with playwright_api.async_playwright() as driver:

        async def start(extra: list[str]) -> Any:
            browser = await driver.chromium.launch(
                executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra], headless=True
            )
            browsers.append(browser)
            return browser

        try:
            yield start
        finally:
            for browser in browsers:
                await browser.close()


async def _page(browser: Any, *, permissions: list[str] | None = None) -> tuple[Any, list[str]]:
    context = await browser.new_context(permissions=permissions or [])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(15_000)
    return page, errors


def fake_microphone_wav(path: Path, phrase: str) -> Path:
    """``LEAD_SILENCE_S`` of silence, the fixture phrase, then silence: 48 kHz mono PCM16."""
    with wave.open(str(AUDIO / f"{phrase}.pcm16k.wav"), "rb") as source:
        assert source.getsampwidth() == 2 and source.getnchannels() == 1
        rate = source.getframerate()
        speech = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    speech48 = soxr.resample(speech.astype(np.float32) / 32768.0, rate, FAKE_RATE)
    pcm = np.concatenate(
        [
            np.zeros(int(LEAD_SILENCE_S * FAKE_RATE), dtype=np.float32),
            speech48.astype(np.float32),
            np.zeros(int(TAIL_SILENCE_S * FAKE_RATE), dtype=np.float32),
        ]
    )
    samples = np.clip(np.round(pcm * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_RATE)
        out.writeframes(samples.tobytes())
    return path


async def _tenant_with_agent(api: ApiServer) -> tuple[str, str, str]:
    created = await api.client.post(
        "/system/tenants", json={"name": "Call Dental"}, headers=api.admin()
    )
    tenant = await created.json()
    response = await api.client.post(
        f"/tenants/{tenant['id']}/api/agents",
        json={"name": "Front desk", "template": "demo-receptionist"},
        headers=api.bearer(tenant["api_key"]),
    )
    assert response.status == 201
    agent = await response.json()
    return tenant["id"], tenant["api_key"], agent["id"]


async def _sign_in_by_link(page: Any, base: str, code: str) -> None:
    await page.goto(f"{base}/console/#signin={code}")
    await expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
    assert "signin" not in page.url and code not in page.url


# ---------------------------------------------------------------- without speech workers


async def test_sign_in_link_works_once(api: ApiServer, launch: Launch) -> None:
    tenant_id, _key, _agent = await _tenant_with_agent(api)
    base = str(api.client.make_url("")).rstrip("/")
    code = await issue_signin_code(api.services, tenant_id)
    page, errors = await _page(await launch([]))
    await _sign_in_by_link(page, base, code)
    stored = json.loads(await page.evaluate("() => sessionStorage.getItem('voxgate.session')"))
    assert stored["kind"] == "tenant" and stored["tenantId"] == tenant_id
    assert stored["token"].startswith("vg_")
    assert code not in await page.content()
    await expect(page.get_by_role("link", name="Front desk")).to_be_visible()
    history = await page.evaluate("() => window.location.hash")
    assert history == ""

    # The same link in a fresh tab: already used, so the sign-in form explains.
    again, _ = await _page(page.context.browser)
    await again.goto(f"{base}/console/#signin={code}")
    await expect(again.get_by_role("alert")).to_contain_text("This sign-in link did not work")
    await expect(again.get_by_role("form", name="Sign in")).to_be_visible()
    assert "signin" not in again.url
    assert errors == []


async def _open_call(api: ApiServer, page: Any) -> Any:
    tenant_id, _key, _agent = await _tenant_with_agent(api)
    base = str(api.client.make_url("")).rstrip("/")
    await _sign_in_by_link(page, base, await issue_signin_code(api.services, tenant_id))
    await page.get_by_role("button", name="Call Front desk").click()
    return page.get_by_role("region", name="Call with Front desk")


async def test_denied_microphone_says_so(api: ApiServer, launch: Launch) -> None:
    # A fake device exists but nothing grants it: Chromium refuses the prompt.
    page, errors = await _page(await launch(FAKE_MEDIA))
    panel = await _open_call(api, page)
    alert = panel.get_by_role("alert")
    await expect(alert).to_contain_text("Microphone access was denied")
    await expect(panel.get_by_role("status")).to_contain_text("ended")
    await expect(panel.get_by_role("button", name="Call again")).to_be_visible()
    await expect(panel.get_by_role("button", name="Key 1")).to_be_disabled()
    assert errors == []


async def test_missing_microphone_says_so(api: ApiServer, launch: Launch) -> None:
    page, _ = await _page(await launch(AUTO_ALLOW))
    # What Firefox and Chromium report when the machine has no microphone at all.
    await page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));"
    )
    panel = await _open_call(api, page)
    await expect(panel.get_by_role("alert")).to_contain_text("No microphone was found")


@pytest.mark.parametrize(
    ("status", "code", "shown"),
    [
        (503, "no_capacity", "no free speech worker right now (no capacity)"),
        (429, "busy_concurrency", "call quota is reached"),
        (503, "draining", "shutting down or restarting"),
    ],
)
async def test_refused_calls_say_why(
    api: ApiServer, launch: Launch, status: int, code: str, shown: str
) -> None:
    page, _ = await _page(await launch([*FAKE_MEDIA, *AUTO_ALLOW]))
    offers: list[dict[str, Any]] = []

    async def refuse(route: Any) -> None:
        offers.append(json.loads(route.request.post_data))
        body = {"error": {"code": code, "message": "refused by the test"}}
        await route.fulfill(status=status, content_type="application/json", body=json.dumps(body))

    await page.route("**/webrtc", refuse)
    panel = await _open_call(api, page)
    await expect(panel.get_by_role("alert")).to_contain_text(shown)
    # What was offered: non-trickle (candidates inside), audio plus the dtmf data channel.
    [offer] = offers
    assert offer["type"] == "offer"
    sdp = offer["sdp"]
    assert "m=audio" in sdp and "m=application" in sdp and "a=candidate:" in sdp


# ---------------------------------------------------------------- with speech workers


async def test_call_the_receptionist_from_the_console(tmp_path: Path, launch: Launch) -> None:
    pytest.importorskip("aiortc")
    wav = await asyncio.to_thread(
        fake_microphone_wav, tmp_path / "caller.wav", "opening_hours_saturday"
    )
    browser = await launch([*FAKE_MEDIA, *AUTO_ALLOW, f"--use-file-for-fake-audio-capture={wav}"])
    async with contextlib.aclosing(start_speech_env(tmp_path)) as envs:
        env = await anext(envs)
        line = env.lines[0]
        agent_path = f"/tenants/{line.tenant_id}/api/agents/{line.agent_id}"
        name = "Demo receptionist"  # as `make run` names it
        renamed = await env.client.patch(agent_path, json={"name": name}, headers=line.headers)
        assert renamed.status == 200, await renamed.text()
        page, errors = await _page(browser)
        await page.set_viewport_size({"width": 1280, "height": 900})
        await _sign_in_by_link(page, env.url, await issue_signin_code(env.services, line.tenant_id))

        await page.get_by_role("button", name=f"Call {name}").click()
        panel = page.get_by_role("region", name=f"Call with {name}")
        state = panel.get_by_role("status")
        await expect(state).to_contain_text("live", timeout=30_000)
        transcript = panel.get_by_role("list", name="Transcript")
        agent_said = transcript.locator("li.turn-agent")
        caller_said = transcript.locator("li.turn-caller")
        # The agent greets first; then the fake microphone asks the question.
        await expect(agent_said.first).to_contain_text("thanks for calling", timeout=30_000)
        # The console leaves the browser's noise suppression off: with it on,
        # "Saturday" of this synthetic voice was mostly heard as "tag or date".
        await expect(caller_said.first).to_contain_text("Saturday", timeout=40_000)
        hours = "on Saturday from ten to two"
        await expect(agent_said.nth(1)).to_contain_text(hours, timeout=40_000)
        await expect(caller_said.first.locator(".latency")).to_have_text(
            re.compile(r"^reply in \d+ ms$"), timeout=20_000
        )
        latency_ms = int((await caller_said.first.locator(".latency").inner_text()).split()[2])
        assert 0 < latency_ms < 10_000

        # Mute is a toggle the page reports; the keypad reaches the agent (1 = hours).
        mute = panel.get_by_role("button", name="Mute")
        await mute.click()
        await expect(mute).to_have_attribute("aria-pressed", "true")
        await expect(state).to_contain_text("muted")
        await mute.click()
        await expect(mute).to_have_attribute("aria-pressed", "false")
        await panel.get_by_role("group", name="Keypad").get_by_role("button", name="Key 1").click()
        await expect(transcript.locator("li.turn-keypad")).to_contain_text("1")
        await expect(agent_said.nth(2)).to_contain_text("from ten to two", timeout=30_000)

        shot = DOCS if os.environ.get("VOXGATE_UPDATE_SCREENSHOTS") else tmp_path
        await page.screenshot(path=str(shot / "console-call.png"))

        call_id = (await panel.locator(".mono").inner_text()).strip()
        await panel.get_by_role("button", name="Hang up").click()
        await expect(state).to_contain_text("You hung up")
        await expect(panel.get_by_role("button", name="Call again")).to_be_visible()
        await expect(panel.get_by_role("link", name=call_id)).to_be_visible()
        # The server ended the call too.
        await call_left(env.client.app[CALLS].control, call_id, within=10)
        calls_path = f"/tenants/{line.tenant_id}/api/calls"
        detail = await env.client.get(f"{calls_path}/{call_id}", headers=line.headers)
        assert detail.status == 200, await detail.text()
        call = (await detail.json())["call"]
        assert call["ended_at"] is not None
        assert call["provider"] == "webrtc" and call["agent_id"] == line.agent_id
        assert call["end_reason"] == "caller_hangup", call
        assert errors == []


def _unreachable_answer(offer_sdp: str) -> str:
    """An answer to ``offer_sdp`` whose only candidate is a closed port on this host."""
    lines = []
    for line in offer_sdp.splitlines():
        if line.startswith(("a=candidate:", "a=end-of-candidates")):
            continue
        lines.append(line.replace("a=setup:actpass", "a=setup:active"))
        if line.startswith("m="):
            lines.append("a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host")
    return "\r\n".join(lines) + "\r\n"


async def test_ice_failure_says_so(api: ApiServer, launch: Launch) -> None:
    page, _ = await _page(await launch([*FAKE_MEDIA, *AUTO_ALLOW]))

    async def answer(route: Any) -> None:
        offer = json.loads(route.request.post_data)
        body = {"type": "answer", "sdp": _unreachable_answer(offer["sdp"]), "call_id": "c_test"}
        await route.fulfill(status=201, content_type="application/json", body=json.dumps(body))

    await page.route("**/webrtc", answer)
    panel = await _open_call(api, page)
    await expect(panel.get_by_role("status")).to_contain_text("connecting")
    await expect(panel.get_by_role("alert")).to_contain_text(
        "The audio connection failed (ICE)", timeout=40_000
    )
