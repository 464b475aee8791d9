"""A FAKE Twilio REST server for tests, built from the documented Calls API shape.

It is not Twilio: it accepts ``POST /2010-04-01/Accounts/{sid}/Calls.json`` and
``POST …/Calls/{CallSid}.json`` with basic auth, records every request, and
answers with a call resource (or a Twilio-shaped error body).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Recorded:
    path: str
    form: dict[str, str]


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    fail_status: int | None = None
    live_calls: set[str] = field(default_factory=set)
    any_call_live: bool = False  # calls that came in by webhook are live too

    async def handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if header != f"Basic {expected}" or request.match_info["sid"] != self.account_sid:
            return web.json_response(
                {"code": 20003, "message": "Authenticate", "status": 401}, status=401
            )
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.requests.append(Recorded(request.path, form))
        if self.fail_status is not None:
            return web.json_response(
                {"code": 20500, "message": "Internal error", "status": self.fail_status},
                status=self.fail_status,
            )
        call_sid = request.match_info.get("call")
        if call_sid is None:
            missing = [k for k in ("To", "From") if not form.get(k)]
            if missing or not (form.get("Twiml") or form.get("Url")):
                return web.json_response(
                    {"code": 21201, "message": f"Missing {missing or 'Twiml'}", "status": 400},
                    status=400,
                )
            sid = "CA" + secrets.token_hex(16)
            self.live_calls.add(sid)
            return web.json_response(
                {"sid": sid, "status": "queued", "to": form["To"], "from": form["From"]},
                status=201,
            )
        if call_sid not in self.live_calls and not self.any_call_live:
            return web.json_response(
                {"code": 21220, "message": "Call is not in-progress", "status": 400}, status=400
            )
        return web.json_response({"sid": call_sid, "status": "in-progress"})


@asynccontextmanager
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(account_sid="AC" + "1" * 32, auth_token="zz-fake-token")
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Calls.json", fake.handle)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Calls/{call}.json", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
