"""Structured logging shared by the service and the trainer.

Every record is one JSON object per line (``CELREC_LOG_FORMAT=json``, the default) with
``ts``, ``level``, ``logger``, ``message``, the request id of the request being served
(if any), any ``extra={...}`` fields and, for errors, the exception text. ``text`` keeps
the classic human format for local debugging.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import traceback
from typing import IO, Any

# The request id of the request this task/thread is serving; set by the service middleware.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "celrec_request_id", default=None
)

# Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
# uvicorn adds ``color_message`` (the message with ANSI colours): never a JSON field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime",
                                                                 "taskName", "color_message"}
_HANDLER_MARK = "_celrec_handler"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            entry["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        return f"{line} [request_id={request_id}]" if request_id else line


def configure_logging(level: str = "INFO", fmt: str = "json",
                      stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger (uvicorn's and kafka's included) to one handler on the root.

    Idempotent: a second call replaces the handler this module installed before.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    adopt_uvicorn_loggers()
    # kafka-python logs every reconnect attempt at INFO; its warnings are what matter here.
    logging.getLogger("kafka").setLevel(max(root.level, logging.WARNING))
    return handler


def adopt_uvicorn_loggers() -> None:
    """Make uvicorn log through the root handler (JSON) and drop its access log, which the
    service's own one-line-per-request log replaces. uvicorn installs its own handlers
    when it starts, so the service calls this again from its lifespan."""
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
