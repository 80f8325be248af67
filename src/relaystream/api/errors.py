"""Every error the API can answer with, in one table.

Each error is an ``ApiError`` carrying its Volcengine ``Error.Code`` and HTTP status;
callers raise the named constructors below so the code/status pairing lives here only:

    ApiError
     ├─ 400 MissingParameter, InvalidParameter[.<sub>], InvalidActionOrVersion
     ├─ 401 InvalidAccessKey, SignatureDoesNotMatch, InvalidTimestamp
     ├─ 403 AccessDenied.NoPermissionForApp
     ├─ 405 InvalidActionOrVersion (a method other than GET/POST)
     ├─ 429 FlowLimitExceeded.QPSOverLimit, FlowLimitExceeded.TaskNumberOverLimit
     └─ 500 InternalError (the message never carries a stack trace)

The message always names the offending field and, where safe, its value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorKind:
    """A Volcengine error code with the HTTP status it is answered with."""

    code: str
    http_status: int


MISSING_PARAMETER = ErrorKind("MissingParameter", 400)
INVALID_PARAMETER = ErrorKind("InvalidParameter", 400)
INVALID_UNMARSHAL = ErrorKind("InvalidParameter.Unmarshal", 400)
INVALID_BODY_EMPTY = ErrorKind("InvalidParameter.BodyIsEmpty", 400)
INVALID_NOT_EXIST_APP_ID = ErrorKind("InvalidParameter.NotExistAppId", 400)
INVALID_ACTIVE_TASK_NOT_FOUND = ErrorKind("InvalidParameter.ErrorActiveTaskNotFound", 400)
INVALID_ACTION_OR_VERSION = ErrorKind("InvalidActionOrVersion", 400)
# Volcengine has no code of its own for a wrong method; the action cannot be called
# that way, and 405 (with Allow) tells HTTP tooling the same.
METHOD_NOT_ALLOWED = ErrorKind("InvalidActionOrVersion", 405)
INVALID_ACCESS_KEY = ErrorKind("InvalidAccessKey", 401)
SIGNATURE_DOES_NOT_MATCH = ErrorKind("SignatureDoesNotMatch", 401)
INVALID_TIMESTAMP = ErrorKind("InvalidTimestamp", 401)
NO_PERMISSION_FOR_APP = ErrorKind("AccessDenied.NoPermissionForApp", 403)
QPS_OVER_LIMIT = ErrorKind("FlowLimitExceeded.QPSOverLimit", 429)
TASK_NUMBER_OVER_LIMIT = ErrorKind("FlowLimitExceeded.TaskNumberOverLimit", 429)
INTERNAL_ERROR = ErrorKind("InternalError", 500)

ALL_ERROR_KINDS: tuple[ErrorKind, ...] = (
    MISSING_PARAMETER,
    INVALID_PARAMETER,
    INVALID_UNMARSHAL,
    INVALID_BODY_EMPTY,
    INVALID_NOT_EXIST_APP_ID,
    INVALID_ACTIVE_TASK_NOT_FOUND,
    INVALID_ACTION_OR_VERSION,
    METHOD_NOT_ALLOWED,
    INVALID_ACCESS_KEY,
    SIGNATURE_DOES_NOT_MATCH,
    INVALID_TIMESTAMP,
    NO_PERMISSION_FOR_APP,
    QPS_OVER_LIMIT,
    TASK_NUMBER_OVER_LIMIT,
    INTERNAL_ERROR,
)


class ApiError(Exception):
    """An error answered to the client with a Volcengine error envelope."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def http_status(self) -> int:
        return self.kind.http_status


def missing_parameter(field: str) -> ApiError:
    return ApiError(MISSING_PARAMETER, f"The required parameter {field} is missing.")


def invalid_parameter(field: str, reason: str) -> ApiError:
    return ApiError(INVALID_PARAMETER, f"The parameter {field} is invalid: {reason}")


def task_not_found(app_id: str, room_id: str, task_id: str) -> ApiError:
    return ApiError(
        INVALID_ACTIVE_TASK_NOT_FOUND,
        f"No active task with AppId={app_id}, RoomId={room_id}, TaskId={task_id}.",
    )
