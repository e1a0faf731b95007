"""
Refusals as data: every HTTP answer that says no, and its JSON body.
"""

from __future__ import annotations

import json
from enum import IntEnum


class ApiError(Exception):
    """
    A request is refused; rendered as C{{"error": {{code, message, field}}}}.

    @ivar status: the HTTP status code.
    @ivar code: a short kebab-case code clients can branch on.
    @ivar message: one sentence for a person.
    @ivar field: the request field at fault, where there is exactly one.
    @ivar retry_after: seconds to wait before retrying, for 429 and 503.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    def body(self) -> bytes:
        """
        The JSON body of this refusal.
        """
        error: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return json.dumps({"error": error}).encode("utf-8")


def bad_field(field: str, message: str) -> ApiError:
    """
    A 400 refusal naming the one field at fault.
    """
    return ApiError(400, "invalid-field", message, field=field)


class CloseCode(IntEnum):
    """
    Every WebSocket close code Kraken sends (SPEC.md's whole list).
    """

    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    SERVER_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    TOKEN_REPLACED = 4401
    FORBIDDEN = 4403
    PEER_TAKEN_OVER = 4409
    DOCUMENT_TOO_LARGE = 4413
