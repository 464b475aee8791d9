"""Server configuration: one immutable object built from flags and environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import msgspec


class IceServer(msgspec.Struct, frozen=True, kw_only=True):
    """A STUN or TURN server browsers' calls may use (``--ice-servers``).

    ``url`` never carries the credentials: ``turn:host:port?transport=udp``.
    """

    url: str
    username: str | None = None
    credential: str | None = None


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``voxgate serve`` needs; passed down explicitly, never global."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    sip_port: int = 5060
    rtp_ports: tuple[int, int] = (20000, 20999)
    data_dir: Path = Path(".voxgate")
    public_url: str | None = None
    redis_url: str | None = None
    milvus_uri: str | None = None
    ready_file: Path | None = None
    drain_timeout: float = 30.0
    admin_token: str | None = None
    master_key: str | None = None
    log_level: str = "info"
    # Render a flow agent's static prompts when it is published (off the media core).
    render_prompts: bool = True
    # STUN/TURN servers for browser (WebRTC) calls; none: host candidates only.
    ice_servers: tuple[IceServer, ...] = ()

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"


class ConfigError(ValueError):
    """A flag or environment value is unusable; the message names it."""


# Contract flags of ``voxgate serve``; each is also ``VOXGATE_<NAME>`` in the environment.
SERVE_FLAGS = (
    "host",
    "http_port",
    "sip_port",
    "rtp_ports",
    "data_dir",
    "public_url",
    "redis_url",
    "milvus_uri",
    "ready_file",
    "drain_timeout",
    "log_level",
    "ice_servers",
)
# Flags the management commands share with ``serve`` (they open the same store).
STORE_FLAGS = ("data_dir", "redis_url")


def env_name(flag: str) -> str:
    return "VOXGATE_" + flag.upper()


def parse_port(text: str, name: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: {port} is outside 0..65535")
    return port


def parse_port_range(text: str, name: str) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    if not sep:
        raise ConfigError(f"{name}: expected LOW-HIGH, got {text!r}")
    low, high = parse_port(low_text, name), parse_port(high_text, name)
    if low == 0 or low > high:
        raise ConfigError(f"{name}: {text!r} is not a range of ports 1..65535, low <= high")
    return low, high


def parse_seconds(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise ConfigError(f"{name}: {value} is outside 0..86400 seconds")
    return value


_LOG_LEVELS = ("debug", "info", "warning", "error")

_ICE_URL = re.compile(
    r"^(?P<scheme>stuns?|turns?):(?:(?P<user>[^:@/?]*):(?P<password>[^@/?]*)@)?"
    r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


def parse_ice_servers(text: str, name: str = "--ice-servers") -> tuple[IceServer, ...]:
    """Comma-separated ``stun:host[:port]`` and ``turn[s]:user:password@host[:port]
    [?transport=udp|tcp]`` URLs; user and password are percent-decoded (``%40`` is
    ``@``, ``%3A`` is ``:``, ``%2C`` is a comma)."""
    servers: list[IceServer] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ICE_URL.match(item)
        if match is None:
            raise ConfigError(
                f"{name}: {item!r} is not stun:HOST[:PORT] or turn[s]:USER:PASS@HOST[:PORT]"
            )
        scheme, port = match["scheme"], match["port"]
        if port is not None and not 0 < int(port) <= 65535:
            raise ConfigError(f"{name}: {item!r} has a port outside 1..65535")
        has_credentials = match["user"] is not None
        if scheme.startswith("turn") and not (has_credentials and match["user"]):
            raise ConfigError(f"{name}: {scheme} needs USER:PASS@ before the host")
        if scheme.startswith("stun") and (has_credentials or match["transport"]):
            raise ConfigError(f"{name}: {scheme} takes no credentials or transport")
        if scheme == "turns" and match["transport"] == "udp":
            raise ConfigError(f"{name}: turns runs over TCP only")
        url = f"{scheme}:{match['host']}" + (f":{port}" if port else "")
        if match["transport"]:
            url += f"?transport={match['transport']}"
        servers.append(
            IceServer(
                url=url,
                username=unquote(match["user"]) if has_credentials else None,
                credential=unquote(match["password"]) if has_credentials else None,
            )
        )
    return tuple(servers)


def absolute(path: Path) -> Path:
    """``path`` made absolute against the current directory (``~`` expanded)."""
    return Path(os.path.abspath(path.expanduser()))


def config_from(flags: dict[str, str | None], env: dict[str, str]) -> Config:
    """Build a Config: a flag wins over ``VOXGATE_<NAME>``, which wins over the default.

    ``REDIS_URL`` is honoured after ``VOXGATE_REDIS_URL``; ``VOXGATE_ADMIN_TOKEN``
    and ``VOXGATE_MASTER_KEY`` exist only as environment variables so they never
    show up in process listings.
    """

    def pick(flag: str) -> str | None:
        value = flags.get(flag)
        if value is None:
            value = env.get(env_name(flag)) or None
        if value is None and flag == "redis_url":
            value = env.get("REDIS_URL") or None
        return value

    def label(flag: str) -> str:
        return "--" + flag.replace("_", "-")

    defaults = Config()
    values: dict[str, object] = {}
    data_dir = defaults.data_dir
    if (host := pick("host")) is not None:
        if not host.strip():
            raise ConfigError("--host: empty host")
        values["host"] = host
    if (text := pick("http_port")) is not None:
        values["http_port"] = parse_port(text, label("http_port"))
    if (text := pick("sip_port")) is not None:
        values["sip_port"] = parse_port(text, label("sip_port"))
    if (text := pick("rtp_ports")) is not None:
        values["rtp_ports"] = parse_port_range(text, label("rtp_ports"))
    if (text := pick("data_dir")) is not None:
        if not text.strip():
            raise ConfigError("--data-dir: empty path")
        data_dir = Path(text)
    if (text := pick("public_url")) is not None:
        if not text.startswith(("http://", "https://")):
            raise ConfigError(f"--public-url: {text!r} must start with http:// or https://")
        values["public_url"] = text.rstrip("/")
    if (text := pick("redis_url")) is not None:
        if not text.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("--redis-url: must start with redis://, rediss:// or unix://")
        values["redis_url"] = text
    if (text := pick("milvus_uri")) is not None:
        # A milvus-lite database is a local file: pin it like every other path.
        values["milvus_uri"] = text if "://" in text else str(absolute(Path(text)))
    if (text := pick("ready_file")) is not None:
        values["ready_file"] = absolute(Path(text))
    if (text := pick("drain_timeout")) is not None:
        values["drain_timeout"] = parse_seconds(text, label("drain_timeout"))
    if (text := pick("log_level")) is not None:
        if text.lower() not in _LOG_LEVELS:
            raise ConfigError(f"--log-level: expected one of {', '.join(_LOG_LEVELS)}")
        values["log_level"] = text.lower()
    if (text := pick("ice_servers")) is not None:
        values["ice_servers"] = parse_ice_servers(text, label("ice_servers"))
    # Paths are pinned at start-up: children (embedded Redis, workers) and later
    # chdirs must never reinterpret a relative path against another directory.
    values["data_dir"] = absolute(data_dir)
    values["admin_token"] = env.get("VOXGATE_ADMIN_TOKEN") or None
    values["master_key"] = env.get("VOXGATE_MASTER_KEY") or None
    return msgspec.structs.replace(defaults, **values)
