"""Property: any bad flow document POSTed as an agent gets 422 with a field path, never 500."""

from __future__ import annotations

import copy
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.test_api import FLOW
from tests.server.test_cli import Serve, clean_env

ADMIN = "flow-property-admin-token"


class ServerProcess:
    """The real ``voxgate serve`` in a child process, so sync hypothesis tests can call it
    (a server thread in this process would compete with hypothesis for the GIL)."""

    def __init__(self, data_dir: Path) -> None:
        self.ready_file = data_dir / "ready.json"
        self.serve = Serve(
            "--http-port", "0", "--sip-port", "0", "--data-dir", str(data_dir / "data"),
            "--ready-file", str(self.ready_file),
            env=clean_env(VOXGATE_ADMIN_TOKEN=ADMIN, VOXGATE_LOG_LEVEL="warning"),
        )  # fmt: skip

    def __enter__(self) -> ServerProcess:
        self.serve.read_until("listening on")
        parts = urlsplit(json.loads(self.ready_file.read_text())["http"])
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port = parts.hostname, parts.port
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            assert self.serve.stop() == 0
        finally:
            self.serve.kill()

    def request(
        self, method: str, path: str, body: Any = None, token: str = ADMIN
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    with ServerProcess(tmp_path_factory.mktemp("flowprop")) as server:
        status, body = server.request("POST", "/system/tenants", {"name": "prop"})
        assert status == 201
        yield server, body["id"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
node_types = st.sampled_from(
    ["start", "say", "ask", "intent", "condition", "set", "knowledge", "llm", "webhook",
     "transfer", "hangup", "subflow", "zap", "", "SAY"]
)  # fmt: skip
names = st.sampled_from(["start", "hello", "ask", "hours", "book", "sorry", "ghost", "", "e1"])


@st.composite
def mutated_flows(draw: st.DrawFn) -> Any:
    """A valid flow with one to three targeted breakages."""
    doc = copy.deepcopy(FLOW)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 7))
        if kind == 0:
            doc.pop(draw(st.sampled_from(sorted(doc))), None)
        elif kind == 1:
            doc[draw(st.sampled_from(sorted(doc)))] = draw(json_values)
        elif kind == 2 and doc.get("nodes") and isinstance(doc["nodes"], list):
            node = draw(st.sampled_from(doc["nodes"]))
            if isinstance(node, dict):
                node[draw(st.sampled_from(["type", "id", "text", "slot", "extra"]))] = draw(
                    node_types | json_values
                )
        elif kind == 3 and isinstance(doc.get("edges"), list) and doc["edges"]:
            edge = draw(st.sampled_from(doc["edges"]))
            if isinstance(edge, dict):
                field = draw(st.sampled_from(["source", "target", "port", "id"]))
                edge[field] = draw(names | st.sampled_from(["filled", "next", "x"]))
        elif kind == 4 and isinstance(doc.get("nodes"), list):
            doc["nodes"].append({"id": draw(names), "type": draw(node_types)})
        elif kind == 5 and isinstance(doc.get("edges"), list):
            doc["edges"].append(
                {"id": "ex", "source": draw(names), "port": "next", "target": draw(names)}
            )
        elif kind == 6 and isinstance(doc.get("intents"), list):
            doc["intents"].append(
                {"name": draw(st.text(max_size=4)), "examples": draw(json_values)}
            )
        else:
            doc["schema"] = draw(st.text(max_size=12))
    return doc


@settings(
    max_examples=150,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(flow=mutated_flows() | json_values)
def test_bad_flows_get_422_with_path(running: tuple[ServerProcess, str], flow: Any) -> None:
    server, tenant_id = running
    status, body = server.request(
        "POST", f"/tenants/{tenant_id}/api/agents", {"name": "prop", "flow": flow}
    )
    assert status in (201, 422), (status, body)
    if status == 422:
        error = body["error"]
        assert error["code"] in ("invalid_flow", "invalid")
        assert isinstance(error["path"], str) and error["path"].startswith("$"), error
        assert error["message"]
    else:  # the mutation happened to leave a valid flow
        deleted, _ = server.request("DELETE", f"/tenants/{tenant_id}/api/agents/{body['id']}")
        assert deleted == 204
