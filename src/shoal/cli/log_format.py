"""``shoal server --log-format json``: one JSON object per line, each with the node's name.

For log collectors (journald's ``MESSAGE``, Loki, Fluent Bit) that would otherwise parse
the text format. Fields: ``time`` (UTC, RFC 3339 with milliseconds), ``level``,
``logger``, ``node``, ``message``, and ``exception`` (the traceback) when there is one.
A message never spans lines: newlines in it are escaped by the JSON encoding.
"""

from __future__ import annotations

import datetime
import logging

import orjson


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, object] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def use_json(node: str, logger: logging.Logger | None = None) -> None:
    """Switch every handler of ``logger`` (the root logger by default) to JSON lines."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter(node))
