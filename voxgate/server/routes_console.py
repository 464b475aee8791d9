"""The web console: the built single-page app under ``/console/``.

The assets are the Vite build output shipped inside the package
(``voxgate/server/console``, built from ``web/`` by ``make web``).  They are read
into memory once, in a thread, on the first console request (a few hundred
kilobytes), with a gzip copy of each compressible file; later requests never
touch the disk.

Paths under ``/console/`` that name no asset are client-side routes of the app
and get ``index.html``; paths under ``assets/`` never fall back, so a stale
asset URL is a clear 404 instead of HTML parsed as JavaScript.  Hashed assets
are cached for a year; ``index.html`` is revalidated on every load so a new
build is picked up at once.

This module owns only static serving; the console talks to the JSON API like
any other client (bearer token in its own tab's session storage).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aiohttp import web

from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, RouteTable

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
INDEX = "index.html"
ASSETS_PREFIX = "assets/"

# Explicit types: the platform's mimetypes table varies (``.js`` has been
# ``application/javascript``, ``text/javascript`` or missing).
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".txt": "text/plain; charset=utf-8",
}
_COMPRESSIBLE = {".html", ".js", ".mjs", ".css", ".json", ".map", ".svg", ".txt"}
_MIN_GZIP_BYTES = 1024

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# The console holds a bearer token: no framing, no third-party origins, no
# referrer.  Inline style attributes are needed by the graph library.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; "
        "font-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_NOT_BUILT = ApiError(
    404,
    "console_not_built",
    "the web console is not built into this installation (run `make web`)",
)
_NO_ASSET = ApiError(404, "not_found", "no such console asset")


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the build, ready to send."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str
    cache_control: str


def _asset(relative: str, body: bytes) -> Asset:
    suffix = PurePosixPath(relative).suffix.lower()
    gzipped = None
    if suffix in _COMPRESSIBLE and len(body) >= _MIN_GZIP_BYTES:
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    return Asset(
        body=body,
        gzipped=gzipped,
        content_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        cache_control=IMMUTABLE if relative.startswith(ASSETS_PREFIX) else REVALIDATE,
    )


def load_assets(root: Path) -> dict[str, Asset]:
    """Every regular file under ``root`` by its POSIX path relative to ``root`` (blocking)."""
    found: dict[str, Asset] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        # Symlinks could point outside the build; a build never makes them.
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(root).as_posix()
            found[relative] = _asset(relative, path.read_bytes())
    return found


class ConsoleAssets:
    """The build output of one console directory, loaded on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, Asset] | None = None

    async def files(self) -> dict[str, Asset]:
        if self._files is None:
            # Racing first requests each load the same files; the last one wins.
            self._files = await asyncio.to_thread(load_assets, self.root)
        return self._files

    async def lookup(self, path: str) -> Asset:
        """The asset for a request path under ``/console/`` (client routes get index.html)."""
        files = await self.files()
        index = files.get(INDEX)
        if index is None:
            raise _NOT_BUILT
        relative = path.lstrip("/")
        if not relative:
            return index
        # Only exact names from the loaded build are served: ``..`` and the like
        # can never name a file outside it.
        found = files.get(relative)
        if found is not None:
            return found
        if relative.startswith(ASSETS_PREFIX):
            raise _NO_ASSET
        return index


def respond(request: web.Request, asset: Asset) -> web.Response:
    """``asset`` as a response: 304 on a matching ETag, gzip when the client takes it."""
    headers = {
        "Cache-Control": asset.cache_control,
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
        **SECURITY_HEADERS,
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = asset.body
    accepts = request.headers.get("Accept-Encoding", "")
    if asset.gzipped is not None and "gzip" in accepts:
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    response = web.Response(body=body, headers=headers)
    response.headers["Content-Type"] = asset.content_type
    return response


def register_console(table: RouteTable, root: Path) -> None:
    """Declare the console routes on ``table``, serving the build in ``root``."""
    tags = ("console",)
    assets = ConsoleAssets(root)

    @table.route(
        "GET", "/console", auth=Auth.PUBLIC, response_media="text/html", tags=tags,
        summary="Redirect to the web console at /console/",
    )  # fmt: skip
    async def console_redirect(call: Call[None]) -> web.StreamResponse:
        return web.Response(status=308, headers={"Location": "/console/"})

    @table.route(
        "GET", "/console/{path:.*}", auth=Auth.PUBLIC, response_media="text/html", tags=tags,
        summary="The web console (single-page app; client routes answer with index.html)",
    )  # fmt: skip
    async def console(call: Call[None]) -> web.StreamResponse:
        return respond(call.request, await assets.lookup(call.param("path")))


def register(table: RouteTable) -> None:
    """Declare the console routes serving the build shipped in the package."""
    register_console(table, CONSOLE_DIR)
