"""baresip (the Debian package) as a real SIP user agent against a real server.

* baresip calls the ``prompt`` agent's number: the call is answered, our tones
  reach baresip (its ``sndfile`` module records the decoded audio: it must
  not be silent), baresip's WAV source reaches us (frames in), and our agent
  hangs up cleanly (BYE answered, record ``completed``).
* We call baresip (``answermode=auto``) with ``POST …/calls`` through a trunk
  pointed at baresip's address: the same checks the other way round.

baresip 1.0's ``aufile`` module only provides a source, so the player is
ALSA's ``null`` device and the received audio is taken from ``sndfile``'s
dump of the decoded stream.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.e2e.sip_env import PROMPT_NUMBER, TESTDATA, SipEnv, sip_server
from voxgate.server.call_control import CALLS
from voxgate.tenants.calls import CallRecord, CallRecords

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed")

MODULES = Path("/usr/lib/baresip/modules")
BARESIP_NUMBER = "+14155550100"


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _caller_wav(path: Path) -> None:
    """8 kHz 16-bit mono speech for baresip's aufile source."""
    with wave.open(str(TESTDATA / "audio" / "account_balance.pcm16k.wav")) as source:
        samples = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples[::2].tobytes())


def _baresip_dir(root: Path, sip_port: int) -> Path:
    root.mkdir()
    _caller_wav(root / "caller.wav")
    rtp = _free_port()
    (root / "config").write_text(
        f"sip_listen 127.0.0.1:{sip_port}\n"
        "audio_player alsa,null\n"
        "audio_alert alsa,null\n"
        f"audio_source aufile,{root / 'caller.wav'}\n"
        "audio_srate 8000\naudio_channels 1\n"
        f"module_path {MODULES}\n"
        "module g711.so\nmodule aufile.so\nmodule alsa.so\nmodule sndfile.so\n"
        "module account.so\nmodule menu.so\n"
        f"snd_path {root}\n"
        f"rtp_ports {rtp}-{rtp + 1}\n"
    )
    (root / "accounts").write_text(
        # baresip picks the account by the Request-URI user: our trunk dials it.
        f"<sip:{BARESIP_NUMBER}@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU\n"
    )
    return root


class Baresip:
    """A running baresip; output is collected until it exits (``-t`` bounds its life)."""

    def __init__(self, proc: asyncio.subprocess.Process, seconds: int) -> None:
        self.proc = proc
        self.seconds = seconds
        self.lines: list[str] = []

    @classmethod
    async def start(cls, root: Path, *commands: str, seconds: int) -> Baresip:
        args = ["baresip", "-f", str(root), "-t", str(seconds)]
        for command in commands:
            args += ["-e", command]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return cls(proc, seconds)

    async def wait_ready(self) -> None:
        """Until baresip listens (it prints this once its SIP stack is up)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(10):
            while True:
                line = (await self.proc.stdout.readline()).decode(errors="replace")
                assert line, "baresip exited: " + "".join(self.lines)
                self.lines.append(line)
                if "baresip is ready" in line:
                    return

    async def finish(self) -> str:
        try:
            async with asyncio.timeout(self.seconds + 15):
                out, _ = await self.proc.communicate()
            self.lines.append(out.decode(errors="replace"))
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        return "".join(self.lines)[-3000:]


def _received_rms(root: Path) -> float:
    """RMS of what baresip decoded from us (sndfile's ``*-dec.wav``)."""
    dumps = sorted(root.glob("dump-*-dec.wav"))
    assert dumps, sorted(p.name for p in root.iterdir())
    with wave.open(str(dumps[0])) as dump:
        samples = np.frombuffer(dump.readframes(dump.getnframes()), dtype="<i2")
    assert samples.size > 8000  # at least a second of audio
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


async def _only_call(env: SipEnv) -> CallRecord:
    page = await CallRecords(env.services.store).list(env.tenant_id)
    assert len(page.calls) == 1
    return page.calls[0]


async def test_baresip_calls_the_prompt_agent(env: SipEnv, tmp_path: Path) -> None:
    root = _baresip_dir(tmp_path / "baresip", _free_port())
    baresip = await Baresip.start(
        root, f"/dial sip:{PROMPT_NUMBER}@127.0.0.1:{env.sip_port}", seconds=6
    )
    out = await baresip.finish()
    async with asyncio.timeout(10):
        await env.server.app[CALLS].control.wait_idle()
    call = await _only_call(env)
    assert call.status == "completed", out[-3000:]
    assert call.end_reason == "agent_hangup"
    assert call.frames_out >= 60 and call.frames_in >= 25, call
    assert _received_rms(root) > 300, out[-3000:]  # our tones, not silence


async def _api(env: SipEnv, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    ready = env.server.ready
    assert ready is not None and ready.admin_token is not None
    url = f"{ready.http}/tenants/{env.tenant_id}/api{path}"
    headers = {"Authorization": f"Bearer {ready.admin_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_we_call_baresip_through_a_trunk(env: SipEnv, tmp_path: Path) -> None:
    port = _free_port()
    root = _baresip_dir(tmp_path / "baresip", port)
    status, trunk = await _api(
        env, "POST", "/trunks",
        {"name": "baresip", "hosts": [f"127.0.0.1:{port}"], "username": "agent",
         "register": False, "caller_id": "+15557654321"},
    )  # fmt: skip
    assert status == 201, trunk
    baresip = await Baresip.start(root, seconds=7)
    try:
        await baresip.wait_ready()
        status, placed = await _api(
            env, "POST", "/calls",
            {"to": BARESIP_NUMBER, "agent_id": env.prompt_agent,
             "via": f"trunk:{trunk['trunk']['id']}"},
        )  # fmt: skip
        assert status == 201, placed
        async with asyncio.timeout(20):
            await env.server.app[CALLS].control.wait_idle()
    finally:
        out = await baresip.finish()
    call = await _only_call(env)
    assert call.id == placed["id"]
    assert call.status == "completed", (call, out[-3000:])
    assert call.end_reason == "agent_hangup"
    assert call.frames_out >= 60 and call.frames_in >= 25, call
    assert _received_rms(root) > 300, out[-3000:]


@pytest.fixture
async def env(tmp_path: Path) -> Any:
    async with sip_server(tmp_path) as env:
        yield env
