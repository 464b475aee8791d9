"""Server configuration: one immutable object built from flags and environment."""

from __future__ import annotations

from pathlib import Path

import msgspec


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

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"
