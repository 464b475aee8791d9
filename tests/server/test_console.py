"""The web console served from the package: index, assets, client-route fallback, redirect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ApiServer
from voxgate.server.errors import ApiError
from voxgate.server.routes_console import CONSOLE_DIR, ConsoleAssets

_ASSET = re.compile(r'(?:src|href)="(/console/assets/[^"]+)"')


async def _index(api: ApiServer) -> str:
    response = await api.client.get("/console/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    return await response.text()


async def test_index_is_html_without_cache(api: ApiServer) -> None:
    text = await _index(api)
    assert '<div id="root">' in text
    assert "/console/assets/" in text


async def test_assets_have_their_types_and_long_cache(api: ApiServer) -> None:
    assets = _ASSET.findall(await _index(api))
    scripts = [a for a in assets if a.endswith(".js")]
    styles = [a for a in assets if a.endswith(".css")]
    assert scripts and styles, assets
    response = await api.client.get(scripts[0])
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert "immutable" in response.headers["Cache-Control"]
    body = await response.read()
    on_disk = (CONSOLE_DIR / scripts[0].removeprefix("/console/")).read_bytes()
    assert body == on_disk  # transparently gunzipped by the client
    assert response.headers.get("Content-Encoding") == "gzip"
    css = await api.client.get(styles[0])
    assert css.status == 200 and css.content_type == "text/css"


async def test_etag_revalidation(api: ApiServer) -> None:
    first = await api.client.get("/console/")
    etag = first.headers["ETag"]
    again = await api.client.get("/console/", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""


async def test_client_routes_fall_back_to_index(api: ApiServer) -> None:
    index = await _index(api)
    for path in ("/console/t/t_abc/agents", "/console/admin/status", "/console/signin"):
        response = await api.client.get(path)
        assert response.status == 200, path
        assert response.content_type == "text/html"
        assert await response.text() == index


async def test_missing_asset_is_404_not_html(api: ApiServer) -> None:
    response = await api.client.get("/console/assets/nope-123.js")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_traversal_never_leaves_the_build(api: ApiServer) -> None:
    index = await _index(api)
    for path in (
        "/console/../routes_console.py",
        "/console/%2e%2e/routes_console.py",
        "/console/..%2f..%2fpyproject.toml",
    ):
        response = await api.client.get(path)
        if response.status == 200:
            assert await response.text() == index, path
        else:
            assert response.status == 404, path


async def test_console_redirects_to_slash(api: ApiServer) -> None:
    response = await api.client.get("/console", allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == "/console/"


async def test_console_routes_are_public_and_in_openapi(api: ApiServer) -> None:
    document = await (await api.client.get("/openapi.json")).json()
    consoles = {path: ops for path, ops in document["paths"].items() if path.startswith("/console")}
    pages = {path: ops for path, ops in consoles.items() if "get" in ops}
    assert len(pages) == 2
    assert consoles["/console/signin"]["post"]["x-voxgate-auth"] == "public"
    for ops in pages.values():
        assert ops["get"]["x-voxgate-auth"] == "public"
        assert "text/html" in ops["get"]["responses"]["200"]["content"]


async def test_unbuilt_console_says_so(tmp_path: Path) -> None:
    assets = ConsoleAssets(tmp_path / "missing")
    with pytest.raises(ApiError) as raised:
        await assets.lookup("")
    assert raised.value.status == 404 and raised.value.code == "console_not_built"


async def test_lookup_serves_only_files_of_the_build(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<html>index</html>")
    (tmp_path / "assets" / "app-1.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").symlink_to(Path(__file__))
    assets = ConsoleAssets(tmp_path)
    assert (await assets.lookup("assets/app-1.js")).content_type.startswith("text/javascript")
    index = await assets.lookup("")
    assert index.body == b"<html>index</html>"
    assert await assets.lookup("agents/ag_1") is index
    assert await assets.lookup("secret.txt") is index  # symlinks are not part of a build
    assert await assets.lookup("../routes_console.py") is index
    with pytest.raises(ApiError):
        await assets.lookup("assets/other.js")
