"""HTTP error mapping: the one place where errors become OpenAI-format JSON.

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

- `router.errors.CoeError` and subclasses: status and type from the class (see the tree in router/errors.py).
- pydantic `ValidationError` / FastAPI `RequestValidationError`: 400 invalid_request_error,
  `param` = the field path.
- Starlette `HTTPException` (404 route, 405 method): same format.
- anything else: logged with its traceback, a clean 500 without details to the client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from router.errors import CoeError, error_body

log = logging.getLogger("coe.http")

#: pydantic error types -> OpenAI-ish error codes
_CODES = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unsupported_parameter",
    "json_invalid": "invalid_json",
}


def coe_error_body(exc: CoeError) -> dict[str, Any]:
    return dict(exc.body())


def _loc_to_param(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or None


def validation_error_body(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One OpenAI error from pydantic's errors: the first names the field; the message lists all."""
    if not errors:
        return error_body("invalid request", "invalid_request_error")
    msgs = []
    for e in errors:
        param = _loc_to_param(e.get("loc", ()))
        kind = e.get("type", "")
        if kind == "extra_forbidden":
            text = f"unsupported parameter '{param}'"
        elif kind == "missing":
            text = f"missing required parameter '{param}'"
        else:
            text = (
                f"invalid value for '{param}': {e.get('msg', 'invalid')}"
                if param
                else e.get("msg", "invalid")
            )
        msgs.append(text)
    first = errors[0]
    return error_body(
        "; ".join(msgs),
        "invalid_request_error",
        _loc_to_param(first.get("loc", ())),
        _CODES.get(first.get("type", ""), "invalid_value"),
    )


def install_error_handlers(app: Any) -> None:
    """Register the handlers on a FastAPI app."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def on_coe(_request: Any, exc: CoeError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        retry = getattr(exc, "retry_after_s", None)
        headers = {"retry-after": str(max(1, math.ceil(retry)))} if retry is not None else None
        return JSONResponse(coe_error_body(exc), status_code=exc.status, headers=headers)

    async def on_validation(_request: Any, exc: Exception) -> JSONResponse:
        errors = exc.errors() if hasattr(exc, "errors") else []
        return JSONResponse(validation_error_body(errors), status_code=400)

    async def on_http(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
        return JSONResponse(
            error_body(str(exc.detail), kinds.get(exc.status_code, "invalid_request_error")),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def on_any(_request: Any, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", type(exc).__name__)
        return JSONResponse(error_body("internal server error", "internal_error"), status_code=500)

    app.add_exception_handler(CoeError, on_coe)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_any)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, used for every error status."""

    error: ErrorDetail
