"""Route table, body decoding and the request pipeline, on a small app of test routes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from voxgate.server.app import route_table
from voxgate.server.errors import ApiError
from voxgate.server.metrics import HttpMetrics
from voxgate.server.middleware import middlewares
from voxgate.server.openapi import OpenApiDocument, build_openapi, openapi_path
from voxgate.server.routing import Auth, BodyKind, Call, RouteTable
from voxgate.server.state import METRICS, OPENAPI, ROUTES, SOCKETS, OpenSockets
from voxgate.tenants.errors import Conflict, CryptoError, InvalidInput, NotFound, QuotaExceeded


class Inner(msgspec.Struct, kw_only=True):
    size: Annotated[int, msgspec.Meta(ge=1, le=10)]


class Thing(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    inner: Inner | None = None


class Echo(msgspec.Struct, kw_only=True):
    name: str
    size: int | None


class Form(msgspec.Struct, kw_only=True):
    CallSid: str
    Digits: str = ""


def make_table() -> RouteTable:
    table = RouteTable()

    @table.route("POST", "/things", auth=Auth.PUBLIC, body=Thing, response=Echo, status=201,
                 summary="Make a thing")  # fmt: skip
    async def make_thing(call: Call[Thing]) -> Echo:
        size = call.body.inner.size if call.body.inner else None
        return Echo(name=call.body.name, size=size)

    @table.route("GET", "/things/{thing_id}", auth=Auth.PUBLIC, response=Echo,
                 summary="A thing")  # fmt: skip
    async def get_thing(call: Call[None]) -> Echo:
        errors = {
            "missing": NotFound("no such thing"),
            "taken": Conflict("taken"),
            "full": QuotaExceeded("too many things"),
            "bad": InvalidInput("bad size", "$.inner.size"),
            "crypto": CryptoError("key mismatch"),
            "boom": RuntimeError("secret internals"),
            "teapot": ApiError(418, "teapot", "short and stout"),
        }
        if (error := errors.get(call.param("thing_id"))) is not None:
            raise error
        return Echo(name=call.param("thing_id"), size=None)

    @table.route("POST", "/form", auth=Auth.PUBLIC, body=Form, body_kind=BodyKind.FORM,
                 response=Echo, summary="Form body")  # fmt: skip
    async def form(call: Call[Form]) -> Echo:
        return Echo(name=call.body.CallSid, size=len(call.body.Digits))

    @table.route("DELETE", "/things/{thing_id}", auth=Auth.PUBLIC, status=204,
                 summary="Delete a thing")  # fmt: skip
    async def delete_thing(call: Call[None]) -> None:
        return None

    return table


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    table = make_table()
    app = web.Application(middlewares=middlewares(1024), client_max_size=1024)
    app[METRICS] = HttpMetrics()
    app[SOCKETS] = OpenSockets()
    table.install(app, ROUTES)
    app[OPENAPI] = OpenApiDocument(table, title="t", version="0")
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def error_of(response: object) -> dict[str, object]:
    assert hasattr(response, "json")
    body = await response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error  # type: ignore[no-any-return]


async def test_body_decoded_and_response_encoded_with_declared_status(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.post("/things", json={"name": "a", "inner": {"size": 3}})
    assert response.status == 201
    assert await response.json() == {"name": "a", "size": 3}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"inner": {"size": 3}}, "$.name"),
        ({"name": "a", "inner": {"size": 11}}, "$.inner.size"),
        ({"name": "a", "inner": {"size": "x"}}, "$.inner.size"),
        ({"name": ""}, "$.name"),
        ([1, 2], "$"),
    ],
)
async def test_validation_errors_are_422_with_field_path(
    client: TestClient,  # type: ignore[type-arg]
    body: object,
    path: str,
) -> None:
    response = await client.post("/things", json=body)
    assert response.status == 422
    error = await error_of(response)
    assert error["code"] == "invalid"
    assert error["path"] == path


async def test_malformed_and_missing_json(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.post("/things", data=b"{nope")
    assert response.status == 400
    assert (await error_of(response))["code"] == "malformed_json"
    response = await client.post("/things", data=b"")
    assert response.status == 422


async def test_form_bodies_decode(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.post("/form", data={"CallSid": "CA1", "Digits": "123"})
    assert await response.json() == {"name": "CA1", "size": 3}
    response = await client.post("/form", data={"Digits": "1"})
    assert response.status == 422
    assert (await error_of(response))["path"] == "$.CallSid"


@pytest.mark.parametrize(
    ("thing", "status", "code"),
    [
        ("missing", 404, "not_found"),
        ("taken", 409, "conflict"),
        ("full", 409, "quota_exceeded"),
        ("bad", 422, "invalid"),
        ("teapot", 418, "teapot"),
    ],
)
async def test_error_mapping(client: TestClient, thing: str, status: int, code: str) -> None:  # type: ignore[type-arg]
    response = await client.get(f"/things/{thing}")
    assert response.status == status
    assert (await error_of(response))["code"] == code


async def test_unexpected_errors_are_500_json_and_logged_without_details(
    client: TestClient,  # type: ignore[type-arg]
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="voxgate.server"):
        for thing in ("boom", "crypto"):
            response = await client.get(f"/things/{thing}")
            assert response.status == 500
            error = await error_of(response)
            assert error == {"code": "internal", "message": "internal server error"}
    logged = [r for r in caplog.records if r.name == "voxgate.server"]
    assert len(logged) == 2 and logged[0].exc_info is not None


async def test_unknown_path_and_method_are_json(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/nowhere")
    assert response.status == 404
    assert (await error_of(response))["code"] == "not_found"
    response = await client.put("/things/x")
    assert response.status == 405
    assert (await error_of(response))["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


async def test_empty_response_is_204(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.delete("/things/x")
    assert response.status == 204
    assert await response.read() == b""


async def test_body_size_limit(client: TestClient) -> None:  # type: ignore[type-arg]
    big = {"name": "x" * 2000}
    response = await client.post("/things", json=big)
    assert response.status == 413
    assert (await error_of(response))["code"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: limit hit while reading
        for _ in range(40):
            yield b'{"name": "' + b"x" * 100

    response = await client.post("/things", data=chunks())
    assert response.status == 413
    assert (await error_of(response))["code"] == "too_large"


async def test_request_id_and_access_log(
    client: TestClient,  # type: ignore[type-arg]
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="voxgate.access"):
        response = await client.get(
            "/things/t1?token=hidden",
            headers={"X-Request-Id": "req-42", "Authorization": "Bearer sekrit"},
        )
        minted = await client.get("/things/t2", headers={"X-Request-Id": "bad id\u00e9!"})
    assert response.headers["X-Request-Id"] == "req-42"
    assert minted.headers["X-Request-Id"] != "bad id\u00e9!"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "voxgate.access"]
    assert lines[0]["request_id"] == "req-42"
    assert lines[0] == {
        "method": "GET",
        "path": "/things/t1",
        "route": "/things/{thing_id}",
        "status": 200,
        "ms": lines[0]["ms"],
        "request_id": "req-42",
    }
    assert lines[1]["request_id"] == minted.headers["X-Request-Id"]
    assert "sekrit" not in caplog.text and "hidden" not in caplog.text


def test_duplicate_routes_are_refused() -> None:
    table = make_table()
    with pytest.raises(ValueError, match="declared twice"):

        @table.route("POST", "/things", auth=Auth.PUBLIC, summary="again")
        async def again(call: Call[None]) -> None:
            return None


def test_openapi_is_generated_from_the_table() -> None:
    document = build_openapi(make_table(), title="t", version="1")
    assert document["openapi"].startswith("3.1")
    make = document["paths"]["/things"]["post"]
    body_schema = make["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/Thing"}
    thing = document["components"]["schemas"]["Thing"]
    assert thing["required"] == ["name"]
    inner = document["components"]["schemas"]["Inner"]
    assert inner["properties"]["size"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert set(make["responses"]) >= {"201", "400", "413", "422"}
    get = document["paths"]["/things/{thing_id}"]["get"]
    assert get["parameters"][0]["name"] == "thing_id"
    assert get["security"] == [] and get["x-voxgate-auth"] == "public"
    form = document["paths"]["/form"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in form
    assert "204" in document["paths"]["/things/{thing_id}"]["delete"]["responses"]


def test_openapi_paths_drop_aiohttp_patterns() -> None:
    assert openapi_path("/console/{path:.*}") == "/console/{path}"
    assert openapi_path("/a/{x}/b/{y:[0-9]+}") == "/a/{x}/b/{y}"
    document = build_openapi(route_table(), title="t", version="1")
    assert all(":" not in path for path in document["paths"])
    assert "/console/{path}" in document["paths"]
