"""The OpenAPI 3.1 description of the Action endpoint, served at ``GET /openapi.json``.

Request bodies come from the pydantic models in ``models.py``, so the document cannot
drift from what the server validates; the error codes come from the table in
``errors.py``. Every action is one operation on ``/``: OpenAPI keys operations by path,
so each action gets its own key ``/#Action=<Name>`` (a fragment is never sent, the
request still goes to ``/``) and pins ``Action`` and ``Version`` in its query parameters,
the convention used for other Action-style APIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relaystream.api.actions import ALREADY_STARTED
from relaystream.api.envelope import API_VERSION, SERVICE_NAME
from relaystream.api.errors import ALL_ERROR_KINDS
from relaystream.api.models import (
    CallbackEventsRequest,
    ListCallbackDeliveriesRequest,
    ListRelayStreamRequest,
    StartRelayStreamRequest,
    TaskKeyRequest,
    UpdateRelayStreamRequest,
)

_SCHEMAS = "#/components/schemas/"


@dataclass(frozen=True)
class ActionDoc:
    name: str
    summary: str
    request: type[BaseModel]
    result: dict[str, Any]
    # GET with the body's fields in the query (SPEC §1: the read actions).
    readable_with_get: bool = False


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _SCHEMAS + name}


ACTIONS: tuple[ActionDoc, ...] = (
    ActionDoc(
        "StartRelayStream",
        "Validate, persist and start a relay task.",
        StartRelayStreamRequest,
        {"type": "string", "enum": ["ok", ALREADY_STARTED]},
    ),
    ActionDoc(
        "UpdateRelayStream",
        "Change the Control of an active task; absent fields keep their value.",
        UpdateRelayStreamRequest,
        {"const": "ok"},
    ),
    ActionDoc(
        "StopRelayStream",
        "End an active task with reason ApiStop.",
        TaskKeyRequest,
        {"const": "ok"},
    ),
    ActionDoc(
        "GetRelayStream",
        "One task, with live statistics while it is active.",
        TaskKeyRequest,
        {
            "type": "object",
            "properties": {"Task": _ref("Task")},
            "required": ["Task"],
        },
        readable_with_get=True,
    ),
    ActionDoc(
        "ListRelayStream",
        "The tasks of an AppId (optionally of one room), newest first by default.",
        ListRelayStreamRequest,
        {
            "type": "object",
            "properties": {
                "Total": {"type": "integer", "minimum": 0},
                "Tasks": {"type": "array", "items": _ref("Task")},
            },
            "required": ["Total", "Tasks"],
        },
        readable_with_get=True,
    ),
    ActionDoc(
        "ListCallbackDeliveries",
        "Operators: the AppId's callback events, by default those pending or failed.",
        ListCallbackDeliveriesRequest,
        {
            "type": "object",
            "properties": {"Deliveries": {"type": "array", "items": _ref("Delivery")}},
            "required": ["Deliveries"],
        },
        readable_with_get=True,
    ),
    ActionDoc(
        "RedeliverCallbacks",
        "Operators: send the AppId's failed callback events (or those named) again.",
        CallbackEventsRequest,
        {
            "type": "object",
            "properties": {"Redelivered": {"type": "integer", "minimum": 0}},
            "required": ["Redelivered"],
        },
    ),
    ActionDoc(
        "DiscardCallbacks",
        "Operators: delete the AppId's failed callback events (or those named).",
        CallbackEventsRequest,
        {
            "type": "object",
            "properties": {"Discarded": {"type": "integer", "minimum": 0}},
            "required": ["Discarded"],
        },
    ),
)

# Which codes each HTTP status carries, from the one error table.
_ERRORS_BY_STATUS: dict[int, list[str]] = {}
for _kind in ALL_ERROR_KINDS:
    _ERRORS_BY_STATUS.setdefault(_kind.http_status, []).append(_kind.code)

_TASK: dict[str, Any] = {
    "type": "object",
    "description": "A task as List and Get show it; never its Token.",
    "properties": {
        "AppId": {"type": "string"},
        "BusinessId": {"type": "string"},
        "RoomId": {"type": "string"},
        "TaskId": {"type": "string"},
        "UserId": {"type": "string"},
        "Status": {
            "type": "integer",
            "enum": [1, 2, 3],
            "description": "1 starting, 2 running, 3 ended",
        },
        "StopReason": {"type": "string"},
        "StopDetail": {"type": "string"},
        "CreateTime": {"type": "integer", "description": "unix ms"},
        "StartTime": {"type": "integer", "description": "unix ms, 0 before the first start"},
        "EndTime": {"type": "integer", "description": "unix ms, 0 while active"},
        "MaxIdleTime": {"type": "integer"},
        "StreamUrl": {"type": "string"},
        "StreamMode": {"type": "integer", "enum": [0, 1]},
        "MediaType": {"type": "integer", "enum": [0, 1, 2]},
        "StartTimeStamp": {"type": "integer"},
        "Loop": {"type": "boolean"},
        "VideoWidth": {"type": "integer"},
        "VideoHeight": {"type": "integer"},
        "FrameRate": {"type": "integer"},
        "Bitrate": {"type": "integer"},
        "Stats": {
            "type": "object",
            "description": "Live statistics, present while a worker runs the task.",
        },
    },
    "required": ["AppId", "RoomId", "TaskId", "UserId", "Status", "StreamUrl"],
}

_DELIVERY: dict[str, Any] = {
    "type": "object",
    "description": "One RelayStreamStateChanged event in the callback outbox.",
    "properties": {
        "EventId": {"type": "string"},
        "RoomId": {"type": "string"},
        "TaskId": {"type": "string"},
        "Sequence": {"type": "integer", "description": "the event's rank among its task's"},
        "State": {"type": "string", "enum": ["pending", "delivered", "failed"]},
        "Attempts": {"type": "integer", "minimum": 0},
        "NextAttemptTime": {"type": "integer", "description": "unix ms; 0 unless pending"},
        "LastError": {"type": "string"},
        "CreateTime": {"type": "integer", "description": "unix ms"},
        "DeliveredTime": {"type": "integer", "description": "unix ms, 0 until delivered"},
        "EventData": {"type": "string", "description": "as sent to the callback URL"},
    },
    "required": ["EventId", "RoomId", "TaskId", "State", "Attempts", "LastError"],
}

_METADATA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "RequestId": {"type": "string", "minLength": 1},
        "Action": {"type": "string"},
        "Version": {"type": "string"},
        "Service": {"const": SERVICE_NAME},
        "Region": {"type": "string"},
    },
    "required": ["RequestId", "Action", "Version", "Service", "Region"],
}

_ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ResponseMetadata": {
            "allOf": [_ref("ResponseMetadata")],
            "properties": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "Code": {
                            "type": "string",
                            "enum": sorted({kind.code for kind in ALL_ERROR_KINDS}),
                        },
                        "CodeN": {"type": "integer"},
                        "Message": {"type": "string"},
                    },
                    "required": ["Code", "Message"],
                }
            },
            "required": ["Error"],
        }
    },
    "required": ["ResponseMetadata"],
    "not": {"required": ["Result"]},
}


def openapi_document() -> dict[str, Any]:
    request_schemas, definitions = models_json_schema(
        [(action.request, "validation") for action in ACTIONS],
        ref_template=_SCHEMAS + "{model}",
    )
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    schemas.update(
        {
            "ResponseMetadata": _METADATA,
            "ErrorEnvelope": _ERROR_ENVELOPE,
            "Task": _TASK,
            "Delivery": _DELIVERY,
        }
    )
    paths: dict[str, Any] = {}
    for action in ACTIONS:
        body_ref = request_schemas[(action.request, "validation")]
        item: dict[str, Any] = {"post": _post_operation(action, body_ref)}
        if action.readable_with_get:
            body = schemas[body_ref["$ref"].removeprefix(_SCHEMAS)]
            item["get"] = _get_operation(action, body)
        paths[f"/#Action={action.name}"] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relaystream",
            "version": API_VERSION,
            "description": (
                "Volcengine-compatible StartRelayStream family. Every request is signed "
                "with Volcengine signature V4 (service rtc); every answer is a JSON "
                "envelope, errors included."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "VolcengineSignatureV4": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": (
                        "HMAC-SHA256 Credential=<AK>/<yyyymmdd>/<region>/rtc/request, "
                        "SignedHeaders=..., Signature=...; with X-Date and "
                        "X-Content-Sha256. The region must be the server's."
                    ),
                }
            },
        },
        "security": [{"VolcengineSignatureV4": []}],
    }


def _action_parameters(action: ActionDoc) -> list[dict[str, Any]]:
    return [
        {
            "name": "Action",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "enum": [action.name]},
        },
        {
            "name": "Version",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "enum": [API_VERSION]},
        },
    ]


def _responses(action: ActionDoc) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "Success.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "ResponseMetadata": _ref("ResponseMetadata"),
                            "Result": action.result,
                        },
                        "required": ["ResponseMetadata", "Result"],
                    }
                }
            },
        }
    }
    for status, codes in sorted(_ERRORS_BY_STATUS.items()):
        response: dict[str, Any] = {
            "description": ", ".join(codes),
            "content": {"application/json": {"schema": _ref("ErrorEnvelope")}},
        }
        if status == 405:
            response["headers"] = {
                "Allow": {"required": True, "schema": {"type": "string", "const": "GET, POST"}}
            }
        responses[str(status)] = response
    return responses


def _post_operation(action: ActionDoc, body_ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": action.name,
        "summary": action.summary,
        "parameters": _action_parameters(action),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body_ref}},
        },
        "responses": _responses(action),
    }


def _get_operation(action: ActionDoc, body: dict[str, Any]) -> dict[str, Any]:
    """The body's top-level fields as query parameters (numbers as decimal strings)."""
    required = set(body.get("required", ()))
    fields = [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _without_null(schema),
        }
        for name, schema in body["properties"].items()
    ]
    return {
        "operationId": f"{action.name}ByQuery",
        "summary": action.summary,
        "parameters": _action_parameters(action) + fields,
        "responses": _responses(action),
    }


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query string has no null: an optional field is simply left out."""
    options = [option for option in schema.get("anyOf", ()) if option.get("type") != "null"]
    if len(options) != 1:
        return schema
    return {**options[0], **{k: v for k, v in schema.items() if k not in {"anyOf", "default"}}}
