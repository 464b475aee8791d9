"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760; RFC 3261 §22).

Sans-IO and clock-free: the server side takes ``now`` (wall-clock seconds,
``time.time()``) explicitly; nothing here sleeps, reads a clock or logs.

Client (UAC answering 401/407)::

    client = DigestClient("alice", password)
    challenge = select_challenge(response.headers.get_lines("WWW-Authenticate"))
    request.headers.set("Authorization", client.authorize(challenge, "INVITE", str(uri)))
    # (Proxy-Authenticate -> Proxy-Authorization, same call)

The client keeps a nonce count per nonce, so reusing a challenge for the next
request sends ``nc=00000002`` and so on.  SHA-256 is preferred over MD5 when a
server offers both (RFC 8760 §2.4); ``qop=auth`` is preferred over
``auth-int``; a challenge without qop gets the RFC 2069 form.

Server (UAS/registrar challenging requests)::

    server = DigestServer(secret=key_bytes, realm="voxgate")
    values = server.challenges(now)                  # WWW-Authenticate values
    creds = parse_credentials(request.headers.get("Authorization"))
    verdict = server.verify(creds, "INVITE", password=lookup(creds.username), now=now)
    # ACCEPTED -> go on; STALE -> 401 with server.challenges(now, stale=True);
    # REJECTED -> 401 (or 403 after repeated failures)

Nonces are stateless: ``timestamp || salt || HMAC-SHA256(secret, ...)``, so any
process sharing the secret can check them, and a nonce older than
``nonce_ttl`` yields ``STALE`` (credentials right, nonce expired) so the
client retries without asking the user again.  The server remembers the
highest nonce count seen per live nonce to refuse replays.  All secret
comparisons use :func:`hmac.compare_digest`.  Passwords live only in memory,
are never part of a ``repr`` and never leave this module except hashed.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from voxgate.sip.errors import DigestError

__all__ = [
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestServer",
    "DigestVerdict",
    "parse_auth_params",
    "parse_challenge",
    "parse_credentials",
    "select_challenge",
]


def _hasher(name: str) -> Callable[[bytes], str]:
    def digest(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return digest


_ALGORITHMS: Final[dict[str, Callable[[bytes], str]]] = {
    "MD5": _hasher("md5"),
    "SHA-256": _hasher("sha256"),
}
if "sha512_256" in hashlib.algorithms_available:
    _ALGORITHMS["SHA-512-256"] = _hasher("sha512_256")
# Strongest first: what a client picks when offered several (RFC 8760 §2.4).
_PREFERENCE: Final = ("SHA-512-256", "SHA-256", "MD5")


def _base_algorithm(algorithm: str) -> tuple[str, bool]:
    upper = algorithm.upper()
    sess = upper.endswith("-SESS")
    base = upper[:-5] if sess else upper
    if base not in _ALGORITHMS:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return base, sess


def _token_end(text: str, pos: int, stops: str) -> int:
    while pos < len(text) and text[pos] not in stops:
        pos += 1
    return pos


def parse_auth_params(text: str) -> dict[str, str]:
    """Parse ``name=value, name="quoted value", ...`` (names lowercased, values unquoted)."""
    params: dict[str, str] = {}
    pos = 0
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t,":
            pos += 1
        if pos >= n:
            break
        end = _token_end(text, pos, "= \t,")
        name = text[pos:end].lower()
        pos = end
        while pos < n and text[pos] in " \t":
            pos += 1
        if not name or pos >= n or text[pos] != "=":
            raise DigestError("malformed auth parameter")
        pos += 1
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == '"':
            out: list[str] = []
            pos += 1
            while True:
                if pos >= n:
                    raise DigestError("unterminated quoted auth parameter")
                ch = text[pos]
                if ch == "\\" and pos + 1 < n:
                    out.append(text[pos + 1])
                    pos += 2
                    continue
                if ch == '"':
                    pos += 1
                    break
                out.append(ch)
                pos += 1
            value = "".join(out)
        else:
            end = _token_end(text, pos, " \t,")
            value = text[pos:end]
            pos = end
            if not value:
                raise DigestError("empty auth parameter")
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] != ",":
            raise DigestError("malformed auth parameter list")
        if name in params:
            raise DigestError(f"duplicate auth parameter {name!r}")
        params[name] = value
    return params


def _split_scheme(header: str) -> tuple[str, str]:
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), rest.strip()


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A parsed ``WWW-Authenticate``/``Proxy-Authenticate: Digest ...`` value."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None


def parse_challenge(header: str) -> DigestChallenge:
    """Parse one challenge; raises :class:`DigestError` if it is not a usable Digest one."""
    scheme, rest = _split_scheme(header)
    if scheme != "digest":
        raise DigestError("not a Digest challenge")
    params = parse_auth_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("Digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    _base_algorithm(algorithm)
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm.upper(),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        domain=params.get("domain"),
    )


def select_challenge(headers: list[str]) -> DigestChallenge:
    """Pick the strongest usable Digest challenge among header values.

    Unknown schemes and algorithms are skipped (RFC 8760 §2.4); raises
    :class:`DigestError` when none is usable.
    """
    usable: list[DigestChallenge] = []
    for value in headers:
        try:
            usable.append(parse_challenge(value))
        except DigestError:
            continue
    if not usable:
        raise DigestError("no usable Digest challenge")

    def rank(challenge: DigestChallenge) -> int:
        base, _ = _base_algorithm(challenge.algorithm)
        return _PREFERENCE.index(base)

    return min(usable, key=rank)


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A parsed ``Authorization``/``Proxy-Authorization: Digest ...`` value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(header: str | None) -> DigestCredentials:
    """Parse Digest credentials; :class:`DigestError` if absent, not Digest or incomplete."""
    if header is None:
        raise DigestError("no credentials")
    scheme, rest = _split_scheme(header)
    if scheme != "digest":
        raise DigestError("not Digest credentials")
    params = parse_auth_params(rest)
    missing = {"username", "realm", "nonce", "uri", "response"} - params.keys()
    if missing:
        raise DigestError(f"Digest credentials missing {sorted(missing)}")
    qop = params.get("qop")
    if qop is not None and ("nc" not in params or "cnonce" not in params):
        raise DigestError("qop without nc/cnonce")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=qop.lower() if qop else None,
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


def _response(
    *,
    algorithm: str,
    ha1_plain: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes,
) -> str:
    """The request-digest of RFC 7616 §3.4.1 from H(username:realm:password)."""
    base, sess = _base_algorithm(algorithm)
    h = _ALGORITHMS[base]
    ha1 = ha1_plain
    if sess:
        ha1 = h(f"{ha1_plain}:{nonce}:{cnonce or ''}".encode())
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{h(body)}".encode())
    else:
        ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def _ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    base, _ = _base_algorithm(algorithm)
    return _ALGORITHMS[base](f"{username}:{realm}:{password}".encode())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestClient:
    """Computes Authorization values for one account, counting nonce uses."""

    __slots__ = ("_cnonce_factory", "_counts", "_password", "username")

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self.username = username
        self._password = password
        self._counts: dict[str, int] = {}
        self._cnonce_factory = cnonce_factory or (lambda: secrets.token_hex(8))

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r}, password=***)"

    def authorize(
        self, challenge: DigestChallenge, method: str, uri: str, body: bytes = b""
    ) -> str:
        """The ``Authorization``/``Proxy-Authorization`` value answering ``challenge``."""
        if "auth" in challenge.qop:
            qop: str | None = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        elif challenge.qop:
            raise DigestError("no supported qop offered")
        else:
            qop = None
        # Only the last nonce's counter matters; forgetting older ones keeps
        # memory bounded for long-lived registrations.
        count = self._counts.get(challenge.nonce, 0) + 1
        self._counts = {challenge.nonce: count}
        nc = f"{count:08x}"
        cnonce = self._cnonce_factory() if qop or challenge.algorithm.endswith("-SESS") else None
        ha1 = _ha1(challenge.algorithm, self.username, challenge.realm, self._password)
        response = _response(
            algorithm=challenge.algorithm,
            ha1_plain=ha1,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={challenge.algorithm}",
        ]
        if cnonce is not None:
            parts.append(f"cnonce={_quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop is not None:
            parts += [f"qop={qop}", f"nc={nc}"]
        return "Digest " + ", ".join(parts)


class DigestVerdict(enum.Enum):
    """Outcome of :meth:`DigestServer.verify`."""

    ACCEPTED = "accepted"
    STALE = "stale"  # right credentials, expired nonce: re-challenge with stale=true
    REJECTED = "rejected"


_NONCE_BYTES: Final = 8 + 8 + 16


@dataclass(slots=True)
class DigestServer:
    """Issues stateless HMAC nonces and verifies Digest credentials in constant time."""

    secret: bytes = field(repr=False)
    realm: str
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    nonce_ttl: float = 300.0
    max_tracked_nonces: int = 10000
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("digest nonce secret must be at least 16 bytes")
        for algorithm in self.algorithms:
            _base_algorithm(algorithm)

    def new_nonce(self, now: float) -> str:
        """A fresh nonce stamped with ``now``."""
        stamp = struct.pack(">Q", max(0, int(now)))
        salt = secrets.token_bytes(8)
        mac = self._mac(stamp + salt)
        return base64.urlsafe_b64encode(stamp + salt + mac).decode().rstrip("=")

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self.secret, data + self.realm.encode(), hashlib.sha256).digest()[:16]

    def _nonce_time(self, nonce: str) -> int | None:
        """The nonce's timestamp if we issued it, else None."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        if not hmac.compare_digest(self._mac(raw[:16]), raw[16:]):
            return None
        (stamp,) = struct.unpack(">Q", raw[:8])
        return int(stamp)

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` (or ``Proxy-Authenticate``) values, strongest first."""
        nonce = self.new_nonce(now)
        values = []
        for algorithm in self.algorithms:
            value = (
                f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, "
                f'algorithm={algorithm}, qop="auth"'
            )
            if stale:
                value += ", stale=true"
            values.append(value)
        return values

    def verify(
        self,
        credentials: DigestCredentials,
        method: str,
        *,
        password: str | None,
        now: float,
        body: bytes = b"",
    ) -> DigestVerdict:
        """Check credentials for a request of ``method``.

        ``password`` is the account's password as looked up by the caller for
        ``credentials.username`` (None if the user is unknown: the work done
        is the same, so timing does not reveal which usernames exist).
        """
        c = credentials
        algorithm = c.algorithm
        if algorithm not in (a.upper() for a in self.algorithms):
            return DigestVerdict.REJECTED
        issued = self._nonce_time(c.nonce)
        expected = _response(
            algorithm=algorithm,
            ha1_plain=_ha1(algorithm, c.username, self.realm, password or ""),
            nonce=c.nonce,
            method=method,
            uri=c.uri,
            qop=c.qop,
            nc=c.nc,
            cnonce=c.cnonce,
            body=body,
        )
        matches = hmac.compare_digest(expected.encode(), c.response.lower().encode())
        if (
            not matches
            or password is None
            or issued is None
            or c.realm != self.realm
            or c.qop not in ("auth", "auth-int")
        ):
            return DigestVerdict.REJECTED
        if issued > now + 5:  # from the future: not our clock, not our nonce
            return DigestVerdict.REJECTED
        if now - issued > self.nonce_ttl:
            return DigestVerdict.STALE
        try:
            count = int(c.nc or "", 16)
        except ValueError:
            return DigestVerdict.REJECTED
        if count <= self._seen.get(c.nonce, 0):
            return DigestVerdict.REJECTED  # replayed nonce count
        self._remember(c.nonce, count, now)
        return DigestVerdict.ACCEPTED

    def _remember(self, nonce: str, count: int, now: float) -> None:
        self._seen[nonce] = count
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.max_tracked_nonces:
            self._seen.popitem(last=False)
        # Expired nonces can never be accepted again, so their counters can go.
        for old in list(self._seen)[:8]:
            stamp = self._nonce_time(old)
            if stamp is None or now - stamp > self.nonce_ttl:
                del self._seen[old]
