"""One error body for every status the API answers, the handlers that produce it, and the body-size guard.

Every error is `{"detail": "<what to fix>", "errors": ["<one problem>", ...]}`: 400, 401, 404, 409, 413,
422, 429, 503 (and 500, which the tests forbid).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Seconds a client is told to wait while the database is away (the API answers 503, never 500).
RETRY_AFTER_S = 5


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str
    errors: list[str]


def _doc(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


UNAVAILABLE = {503: {**_doc("The database is unavailable; retry after the Retry-After header's seconds."),
                     "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}}}
UNAUTHORIZED = {401: _doc("No API key, or an unknown or revoked one (ELIS_AUTH=keys).")}
INVALID = {422: _doc("The request is invalid; `detail` says what to fix.")}
NOT_FOUND = {404: _doc("No such job (or it belongs to another tenant).")}
SUBMIT_ERRORS = {
    400: _doc("The body could not be read."),
    **UNAUTHORIZED,
    413: _doc("The body is larger than ELIS_MAX_BODY_BYTES."),
    **INVALID,
    429: _doc("A per-tenant limit (active jobs, tokens in flight) is reached; retry later."),
    **UNAVAILABLE,
}
READ_ERRORS = {**UNAUTHORIZED, **NOT_FOUND, **INVALID, **UNAVAILABLE}
LIST_ERRORS = {**UNAUTHORIZED, **INVALID, **UNAVAILABLE}
CANCEL_ERRORS = {**UNAUTHORIZED, **NOT_FOUND, 409: _doc("The job already ended."), **INVALID, **UNAVAILABLE}


def error_response(status: int, problems: list[str], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": "; ".join(problems), "errors": problems},
                        headers=headers)


def readable(error: dict) -> str:
    """One validation problem in words: where, then what."""
    if error.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "path", "query"))
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    if error.get("type") == "string_unicode":  # the JSON parser met a lone surrogate (e.g. "\\ud800")
        message = ("contains a lone surrogate (e.g. \\ud800), which is not valid Unicode; send UTF-8 text "
                   "(a surrogate pair must be complete)")
    if error.get("type") == "string_pattern_mismatch" and where == "job_id":
        message = "a job id is 1-64 letters, digits, '-' or '_'"
    return f"{where}: {message}" if where else message


def is_database_outage(exc: BaseException) -> bool:
    """The database is away (refused, dropped or timed out), as opposed to a bug in a query."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def install_error_handlers(app: FastAPI) -> None:
    """Every error answer in the one shape; the database away is a 503 with Retry-After, never a 500."""

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, [readable(e) for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)  # routing's own 404 and 405 too
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, [str(exc.detail)], headers=exc.headers)

    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    # Registered on the database's own errors (not only on Exception, whose handler Starlette runs and then
    # re-raises to the server), so an outage is answered in the error shape and never logged as a crash.
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_database_outage(exc):
            log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
            return error_response(503, [f"the database is unavailable; retry in {RETRY_AFTER_S} s"],
                                  headers={"Retry-After": str(RETRY_AFTER_S)})
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
                  exc_info=exc)
        return error_response(500, [f"internal error: {type(exc).__name__}"])


class BodySizeLimit:
    """Answer 413 to a body past `max_bytes` before reading it whole (Content-Length or streamed bytes).

    A 10 MB body once raised the API's memory by 1.6 GB for good; this bounds what one request can cost.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def guarded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException, so FastAPI's body reader passes it on as it is (as a 413).
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, guarded_receive, send)

    def _message(self) -> str:
        return (f"the request body is larger than {self.max_bytes} bytes; send a shorter prompt or split the "
                "work into more jobs")

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(413, [self._message()])(scope, receive, send)
