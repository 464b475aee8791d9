"""Twilio REST client: place outbound calls and redirect live ones (transfers).

Only two endpoints of the 2010-04-01 API are used:

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with ``To``, ``From``
  and ``Twiml`` (plus optional ``StatusCallback``) creates a call;
* ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with
  ``Twiml`` replaces the TwiML of a live call (a transfer sends ``<Dial>``).

Credentials come from the tenant's ``twilio`` secret (``account_sid``,
``auth_token``) as HTTP basic auth.  The base URL is configurable (tests
point it at a local fake; env ``VOXGATE_TWILIO_API_BASE``).  Errors are typed:
:class:`TwilioAuthError` (401/403), :class:`TwilioRequestError` (other 4xx,
carrying Twilio's error ``code``), :class:`TwilioUnavailable` (5xx, network,
timeout).  Tokens never appear in errors or logs.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

import aiohttp
import msgspec

DEFAULT_API_BASE = "https://api.twilio.com"
API_BASE_ENV = "VOXGATE_TWILIO_API_BASE"
_SID = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")


def api_base_from(env: Mapping[str, str] = os.environ) -> str:
    """The REST base URL: ``VOXGATE_TWILIO_API_BASE`` or Twilio's own."""
    return (env.get(API_BASE_ENV) or DEFAULT_API_BASE).rstrip("/")


class TwilioError(Exception):
    """Base of every Twilio REST failure; ``status`` is the HTTP status (0 if none)."""

    def __init__(self, message: str, status: int = 0, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class TwilioAuthError(TwilioError):
    """The account SID / auth token were refused (or the secret is missing)."""


class TwilioRequestError(TwilioError):
    """Twilio refused the request (bad number, call not in progress, ...)."""


class TwilioUnavailable(TwilioError):
    """Twilio could not be reached or failed on its side; retrying later may work."""


class TwilioCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's ``twilio`` secret; ``auth_token`` never leaves this process."""

    account_sid: str
    auth_token: str

    def __repr__(self) -> str:
        return f"TwilioCredentials(account_sid={self.account_sid!r}, auth_token=***)"


class TwilioCall(msgspec.Struct, kw_only=True):
    """The fields of Twilio's call resource we use."""

    sid: str
    status: str = ""
    to: str = ""
    from_: str = msgspec.field(name="from", default="")


class _ErrorBody(msgspec.Struct):
    code: int | None = None
    message: str = ""


def stream_twiml(stream_url: str, parameters: Mapping[str, str], fallback: str = "") -> str:
    """``<Connect><Stream>`` TwiML with custom parameters (e.g. the call token)."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f"<Stream url={quoteattr(stream_url)}>{params}</Stream></Connect>{fallback}</Response>"
    )


def dial_twiml(target: str, caller_id: str | None = None, timeout: int = 30) -> str:
    """``<Dial>`` TwiML for a blind transfer to ``target`` (+E.164 or a sip: URI)."""
    attrs = f" timeout={quoteattr(str(timeout))}"
    if caller_id:
        attrs += f" callerId={quoteattr(caller_id)}"
    noun = (
        f"<Sip>{escape(target)}</Sip>"
        if target.startswith(("sip:", "sips:"))
        else f"<Number>{escape(target)}</Number>"
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial{attrs}>{noun}</Dial></Response>'


class TwilioRest:
    """Calls API client over one shared aiohttp session (create with :meth:`open`)."""

    def __init__(self, session: aiohttp.ClientSession, *, api_base: str = DEFAULT_API_BASE) -> None:
        self._session = session
        self.api_base = api_base.rstrip("/")

    @classmethod
    def open(cls, *, api_base: str | None = None, timeout: float = 10.0) -> TwilioRest:
        """A client with its own session; call :meth:`close` when done."""
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        return cls(session, api_base=api_base or api_base_from())

    async def close(self) -> None:
        await self._session.close()

    async def create_call(
        self,
        credentials: TwilioCredentials,
        *,
        to: str,
        from_: str,
        twiml: str,
        status_callback: str | None = None,
    ) -> TwilioCall:
        """Place a call that runs ``twiml`` when answered; returns Twilio's call resource."""
        form = {"To": to, "From": from_, "Twiml": twiml}
        if status_callback:
            form["StatusCallback"] = status_callback
            form["StatusCallbackEvent"] = "initiated ringing answered completed"
        return await self._post(credentials, "Calls.json", form)

    async def update_call(
        self, credentials: TwilioCredentials, call_sid: str, *, twiml: str
    ) -> TwilioCall:
        """Replace a live call's TwiML (a transfer sends ``<Dial>``)."""
        if not _SID.match(call_sid):
            raise TwilioRequestError("not a Twilio call SID", 400)
        return await self._post(credentials, f"Calls/{call_sid}.json", {"Twiml": twiml})

    async def _post(
        self, credentials: TwilioCredentials, path: str, form: dict[str, str]
    ) -> TwilioCall:
        if not _SID.match(credentials.account_sid):
            raise TwilioAuthError("the twilio secret has no valid account_sid")
        url = f"{self.api_base}/2010-04-01/Accounts/{credentials.account_sid}/{path}"
        pair = f"{credentials.account_sid}:{credentials.auth_token}".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        try:
            async with self._session.post(url, data=form, headers=headers) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TwilioUnavailable(f"Twilio REST unreachable: {type(exc).__name__}") from None
        if 200 <= status < 300:
            try:
                return msgspec.json.decode(body, type=TwilioCall)
            except msgspec.DecodeError:
                raise TwilioUnavailable("Twilio answered with an unreadable body", status) from None
        try:
            error = msgspec.json.decode(body, type=_ErrorBody)
        except msgspec.DecodeError:
            error = _ErrorBody()
        message = f"Twilio {status}: {error.message or 'request failed'}"
        if status in (401, 403):
            raise TwilioAuthError(message, status, error.code)
        if status >= 500 or status == 429:
            raise TwilioUnavailable(message, status, error.code)
        raise TwilioRequestError(message, status, error.code)
