"""JSON log lines on stdout, one request line per request, and the request-id middleware.

`configure_logging(settings)` installs the formatter once at the entry point; modules only
call `logging.getLogger(__name__)`. Tokens, keys, passwords and bodies are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
import re
import sys
import time
from typing import Any

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.requestctx import account_var, principal_var, request_id_var
from engine.settings import Settings

_ENCODER = msgspec.json.Encoder()
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_EXTRA_FIELDS = ("method", "path", "status", "duration_ms")
RATE_HEADERS_KEY = "aether.rate_headers"
access_logger = logging.getLogger("aether.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the fields of SPEC section 9."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
            "account": account_var.get(),
            "principal": principal_var.get(),
        }
        for key in _EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry).decode()


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Send every log record, as JSON lines, to `stream` (stdout) and `AE_LOG_FILE`."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    formatter = JsonFormatter()
    handler: logging.Handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    if settings.log_file:
        file_handler = logging.handlers.RotatingFileHandler(
            settings.log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
        )
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = name != "uvicorn.access"  # we write our own request line
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)


class RequestLogMiddleware:
    """Accept or generate `X-Request-ID`, echo it, and log one line per request.

    Pure ASGI (not BaseHTTPMiddleware) so a cancelled request cannot leak a pooled
    connection through a detached task.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = (
            incoming if incoming and _REQUEST_ID_RE.match(incoming) else os.urandom(16).hex()
        )
        tokens = (
            request_id_var.set(request_id),
            account_var.set(None),
            principal_var.set(None),
        )
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                rate = scope.get("state", {}).get(RATE_HEADERS_KEY)
                if rate:
                    present = {k.lower() for k, _ in headers}
                    for key, value in rate.items():
                        if key.lower().encode() not in present:
                            headers.append((key.lower().encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Anything unexpected: a bare problem 500 that names nothing internal, with the
            # request id, logged with its traceback here (not by the server).
            logging.getLogger("aether.errors").error("unhandled error", exc_info=exc)
            if response_started:
                return
            from engine.problems import internal_error_response

            response = internal_error_response(scope.get("path", ""))
            await response(scope, receive, send_wrapper)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            for var, token in zip(
                (request_id_var, account_var, principal_var), tokens, strict=True
            ):
                var.reset(token)
