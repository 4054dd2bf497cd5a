"""OpenAI's error envelope, for every error the API can give (validation included).

    >>> error_body(APIError(400, "temperature=3 is out of range", param="temperature"))
    {'error': {'message': 'temperature=3 is out of range', 'type': 'invalid_request_error', 'param': 'temperature', 'code': None}}
    >>> param_of("stop=['a', 'b', 'c', 'd', 'e'] is not allowed; give up to 4 non-empty strings")
    'stop'
    >>> param_of("messages[2].content has 40,000 characters; the limit is 32,000")
    'messages'

FastAPI answers ``{"detail": ...}`` by default; ``install_handlers`` replaces that for
``RequestValidationError``, ``HTTPException`` (404 for an unknown route, 405 ...), our ``APIError``
and the core's ``ValueError`` (a 400 whose ``param`` is the field the message starts with).
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

# OpenAI's ``type`` for each status it uses.
TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
         404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error with OpenAI's status, message, type, param and code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or TYPES.get(status, "invalid_request_error")
        self.headers = headers


def error_body(exc: APIError) -> dict:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


# "temperature=3 is ...", "messages[2].content has ...", "stream_options.include_usage must ..."
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:[\[.][^ =]*)?(?:=| has | is | must | needs )")


def param_of(message: str, default: str | None = None) -> str | None:
    """The request field a core message names first (``field=value ...``), else ``default``."""
    m = _PARAM.match(message)
    return m.group(1) if m else default


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def from_value_error(exc: ValueError, *, rename: dict | None = None) -> APIError:
    """A 400 for a core ``ValueError``; ``rename`` maps core field names to this request's names."""
    message = str(exc)
    param = param_of(message)
    if rename and param in rename:
        param = rename[param]
    code = "context_length_exceeded" if "context window" in message else None
    return APIError(400, message, param=param, code=code)


def install_handlers(app) -> None:
    """Make every error of ``app`` an OpenAI envelope."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def respond(exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return respond(exc)

    from ..generation.scheduler import Busy

    @app.exception_handler(Busy)
    async def _busy(request, exc: Busy):  # the model's batch queue is full (generation.scheduler)
        return respond(APIError(503, str(exc), type="server_error"))

    @app.exception_handler(ValueError)
    async def _value_error(request, exc: ValueError):
        return respond(from_value_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        param = loc[0] if loc else None
        message = first.get("msg", "invalid request")
        return respond(APIError(400, f"{'.'.join(loc) or 'request'}: {message}", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            message = str(exc.detail)
        return respond(APIError(exc.status_code, message, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return respond(APIError(500, "The server had an error while processing your request "
                                     f"({type(exc).__name__}); its log has the details.", type="server_error"))
