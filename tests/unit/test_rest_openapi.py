"""The OpenAPI document of the peer REST API: valid, served by the proxy, and in step with its
routes and with the bodies the proxy really makes (so neither can drift from the other)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from loopchain.configure import load_config
from loopchain.p2p.codec import peer_status_to_json
from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest import formatting
from loopchain.rest.app import OPENAPI_PATH, create_app
from loopchain.rest.errors import RestError
from loopchain.rest.icon_monitor import MONITOR_PATHS
from loopchain.rest.jsonrpc import DEBUG_PATHS, V3_PATHS, is_jsonrpc_path
from loopchain.types.codes import ResponseCode

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dict(json.loads(OPENAPI_PATH.read_text(encoding="utf-8")))


@pytest.fixture
def app() -> web.Application:
    return create_app(load_config(environ={}), "127.0.0.1:1")  # no call is made to the peer


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def _validator(document: dict[str, Any], name: str) -> OAS30Validator:
    return OAS30Validator(
        {"components": document["components"], "$ref": f"#/components/schemas/{name}"}
    )


def _errors(document: dict[str, Any], name: str, body: Any) -> list[str]:
    return [error.message for error in _validator(document, name).iter_errors(body)]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_is_documented_and_every_documented_operation_is_served(
    document: dict[str, Any], app: web.Application
) -> None:
    """Every REST route; the JSON-RPC v3 endpoints and their websocket monitors are specified by
    spec/icon-jsonrpc-v3.md (one POST route dispatching on the body's method, with its own error
    shape, is no REST resource)."""
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None  # aiohttp adds HEAD to GETs
    }
    jsonrpc = {(method, path) for method, path in served if is_jsonrpc_path(path)}
    assert jsonrpc == {("POST", path) for path in (*V3_PATHS, *DEBUG_PATHS)} | {
        ("GET", path) for path in MONITOR_PATHS
    }
    assert served - jsonrpc == _operations(document)
    assert not any(is_jsonrpc_path(path) for _, path in _operations(document))


async def test_the_proxy_serves_the_document_as_it_is_stored(app: web.Application) -> None:
    request = make_mocked_request("GET", "/api/v1/openapi.json", app=app)
    match = await app.router.resolve(request)
    response = await match.handler(request)
    assert isinstance(response, web.Response) and response.status == 200
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert response.body == OPENAPI_PATH.read_bytes()


def test_every_error_answer_is_the_error_body_and_every_503_says_when_to_retry(
    document: dict[str, Any],
) -> None:
    responses = document["components"]["responses"]
    for (method, path), operation in (
        ((m.upper(), p), item[m])
        for p, item in document["paths"].items()
        for m in item
        if m in HTTP_METHODS
    ):
        statuses = operation["responses"]
        assert "200" in statuses, (method, path)
        for status, response in statuses.items():
            if status.startswith("2"):
                continue
            resolved = responses[response["$ref"].rsplit("/", 1)[1]]
            schema = resolved["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            if status == "503":
                assert resolved["headers"]["Retry-After"]["required"] is True


def test_error_bodies_of_the_proxy_match_the_document(document: dict[str, Any]) -> None:
    for code in ResponseCode:
        if code is ResponseCode.SUCCESS:
            continue
        response = RestError(code, "why").response()
        assert isinstance(response.body, bytes)
        assert _errors(document, "Error", json.loads(response.body)) == []
    assert _errors(document, "Error", {"response_code": 0, "message": "ok"}) != []


def test_bodies_of_the_proxy_match_the_document(document: dict[str, Any]) -> None:
    bodies = {
        "Block": formatting.block_response(pb.BlockReply(), with_txs=False),
        "PeerStatus": peer_status_to_json(
            pb.PeerStatusReply(peer_type=1, block_height=-1, channels=["a"])
        ),
        "ScoreStatus": formatting.score_status_response(
            pb.ScoreStatusReply(id="x", all_version=["1"], message="down", status=-1)
        ),
        "TransactionResult": formatting.tx_result_response(pb.TxResultReply(code=2, message="m")),
        "QueryResult": formatting.query_response('{"a": [1]}'),
        "Accepted": {"response_code": 0, "tx_hash": "ab" * 32, "more_info": ""},
    }
    for name, body in bodies.items():
        assert _errors(document, name, body) == [], name


def test_the_transaction_schema_admits_what_the_peer_takes_and_not_floats(
    document: dict[str, Any],
) -> None:
    assert _errors(document, "Transaction", {"data": "hello"}) == []
    assert _errors(document, "Transaction", {"a": [1, None, {"b": True}], "channel": "c"}) == []
    assert _errors(document, "Transaction", {"a": 1.5}) != []
    assert _errors(document, "Transaction", {"channel": 1}) != []
    assert _errors(document, "TransactionArray", []) != []
