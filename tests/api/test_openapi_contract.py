"""The served OpenAPI document against the server it describes: schemathesis generates
signed requests for every operation (valid ones and invalid ones) and checks that no
answer is a 5xx and that every answer is an envelope matching the document."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from relaystream.api.openapi import openapi_document
from relaystream.api.signature import sign_request
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)

REGION = "cn-north-1"
EXAMPLES_PER_OPERATION = 30  # 11 operations, two modes: about 650 requests in all


class VolcengineV4(requests.auth.AuthBase):
    """Signs each prepared request as the SDK would, whatever schemathesis put in it."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(request.url or "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() in {"content-type"}
        }
        signed = sign_request(
            method=request.method or "GET",
            host=url.netloc,
            path=unquote(url.path) or "/",
            query=parse_qs(url.query, keep_blank_values=True),
            headers=headers,
            body=body,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            region=REGION,
        )
        request.headers.update(signed)
        return request


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    server = start_server(tmp_path_factory.mktemp("contract"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served_schema(contract_server: RelayServer) -> Any:
    schema = schemathesis.openapi.from_url(f"{contract_server.base_url}/openapi.json")
    schema.config.generation.update(with_security_parameters=False)  # signed below instead
    return schema


# Collected from the document itself, so a new action is tested without a change here.
OPERATIONS = [
    (path, method) for path, item in openapi_document()["paths"].items() for method in item
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_every_answer_is_an_envelope_from_the_document(
    served_schema: Any,
    contract_server: RelayServer,
    path: str,
    method: str,
    mode: GenerationMode,
) -> None:
    operation = served_schema[path][method.upper()]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        check_one_case(case, contract_server, mode)

    check()


def check_one_case(case: Any, server: RelayServer, mode: GenerationMode) -> None:
    # Our own AppId where the generator put a valid-looking one, so requests get past
    # the account checks into validation and the task service.
    if mode is GenerationMode.POSITIVE:
        for params in (case.body, case.query):
            if isinstance(params, dict) and isinstance(params.get("AppId"), str):
                params["AppId"] = APP_ID

    with requests.Session() as session:
        session.auth = VolcengineV4()
        response = case.call(base_url=server.base_url, session=session)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    case.validate_response(response, checks=checks)

    envelope = json.loads(response.content)
    error = envelope["ResponseMetadata"].get("Error")
    action = case.operation.definition.raw["operationId"].removesuffix("ByQuery")
    query = case.query or {}
    if error and error["Code"] == "InvalidActionOrVersion":
        # Action and Version as documented: every documented action exists.
        as_documented = query.get("Action") == action and query.get("Version") == "2023-11-01"
        assert not as_documented, error
    assert "Traceback" not in response.text


def test_a_task_life_matches_the_document(served_schema: Any, contract_server: RelayServer) -> None:
    """The successes the generator cannot reach (it has no valid token): start a task
    scheduled an hour ahead, read it both ways, stop it; each answer matches."""
    key = {"AppId": APP_ID, "RoomId": "contract-room", "TaskId": "contract-task"}
    start = {
        **key,
        "UserId": "contract-user",
        "Token": contract_server.publish_token("contract-room", "contract-user"),
        "Control": {
            "StreamUrl": "http://127.0.0.1:9/never.flv",
            "StreamMode": 1,
            "StartTimeStamp": int(time.time()) + 3600,
        },
    }
    steps = [
        ("/#Action=StartRelayStream", "POST", {"body": start}, "ok"),
        ("/#Action=StartRelayStream", "POST", {"body": start}, "The task has been started"),
        ("/#Action=GetRelayStream", "POST", {"body": key}, None),
        ("/#Action=GetRelayStream", "GET", {}, None),
        ("/#Action=StopRelayStream", "POST", {"body": key}, "ok"),
    ]
    for path, method, kwargs, result_prefix in steps:
        operation = served_schema[path][method]
        query = {"Action": operation.definition.raw["operationId"].removesuffix("ByQuery")}
        query["Version"] = "2023-11-01"
        if method == "GET":
            query.update(key)
        case = operation.Case(query=query, media_type="application/json", **kwargs)
        with requests.Session() as session:
            session.auth = VolcengineV4()
            response = case.call(base_url=contract_server.base_url, session=session)
        assert response.status_code == 200, response.text
        case.validate_response(
            response, checks=[status_code_conformance, response_schema_conformance]
        )
        result = response.json()["Result"]
        if result_prefix is None:
            assert result["Task"]["TaskId"] == "contract-task"
        else:
            assert result.startswith(result_prefix)


def test_document_names_every_action_body_and_error(contract_server: RelayServer) -> None:
    document = requests.get(f"{contract_server.base_url}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    actions = {path.removeprefix("/#Action=") for path in document["paths"]}
    assert actions == {
        "StartRelayStream",
        "UpdateRelayStream",
        "StopRelayStream",
        "GetRelayStream",
        "ListRelayStream",
        "ListCallbackDeliveries",
        "RedeliverCallbacks",
        "DiscardCallbacks",
    }
    schemas = document["components"]["schemas"]
    # The bodies are the validating models themselves.
    assert schemas["StartRelayStreamRequest"]["required"] == [
        "AppId",
        "RoomId",
        "TaskId",
        "UserId",
        "Token",
        "Control",
    ]
    assert schemas["StartControl"]["properties"]["StreamMode"]["type"] == "integer"
    codes = set(
        schemas["ErrorEnvelope"]["properties"]["ResponseMetadata"]["properties"]["Error"][
            "properties"
        ]["Code"]["enum"]
    )
    assert {"SignatureDoesNotMatch", "InvalidActionOrVersion", "InternalError"} <= codes
    for item in document["paths"].values():
        for operation in item.values():
            assert {"200", "400", "401", "403", "405", "429", "500"} <= set(operation["responses"])
