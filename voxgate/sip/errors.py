"""Error types of the sans-IO SIP core.

Following the h11 split between "the peer broke the protocol" and "we misused
the library", a caller can always tell whose fault an exception is:

* :class:`SipParseError` — the remote sent something malformed.  Its
  ``reason`` is a short, fixed ASCII phrase safe to use verbatim as the reason
  phrase of the error response (``status`` is 400, or 505 for an unsupported
  SIP version).  When the start line and header lines could be split but a
  header was missing or malformed, ``message`` carries that best-effort parse
  so a server can still answer statelessly (copying Via/From/To/Call-ID/CSeq);
  when even the request line was bad, ``headers`` and ``method`` are kept for
  the same purpose.  ``voxgate.sip.message.error_response`` builds that answer.
* :class:`SipUsageError` — local code asked for something impossible (a
  response to an ACK, a request in a terminated dialog, ...).  It is a bug on
  our side, never triggered by remote input.
* :class:`DigestError` — a malformed authentication challenge or credentials
  header (remote fault; a server answers 400, a client gives up on the
  challenge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxgate.sip.message import Headers, SipMessage


class SipError(Exception):
    """Base class of every error raised by ``voxgate.sip`` protocol code."""


class SipParseError(SipError):
    """The remote peer sent a malformed SIP message or header value."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # Best-effort parse of the offending message, filled in by the parser
        # when framing succeeded, so a stateless 400 can still be built.
        self.message: SipMessage | None = None
        # Header lines of a request whose start line could not be parsed, and
        # the request's method token, for the same purpose.
        self.headers: Headers | None = None
        self.method: str | None = None


class SipUsageError(SipError):
    """Local misuse of the SIP API (our bug, not the peer's)."""


class DigestError(SipError):
    """A malformed digest challenge or credentials header."""
