"""Operator logs platform teams can read: one line per decision.

Human-readable by default (`2026-11-25 14:05:00 INFO  default/callcenter scale: ...
replicas=7->9`), one JSON object per line with `--log-format json` for log pipelines.
Every decision goes through `decision()` so the pipeline, the reason and the numbers are
always fields, never buried in free text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

DECISION_FIELDS = "speechops_fields"


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        fields: dict[str, Any] = getattr(record, DECISION_FIELDS, {})
        pipeline = fields.get("pipeline")
        head = f"{stamp} {record.levelname:<7} "
        if pipeline:
            head += f"{pipeline} "
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("pipeline", "reason"))
        line = head + record.getMessage()
        if fields.get("reason"):
            line += f" [{fields['reason']}]"
        if extra:
            line += f" {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, DECISION_FIELDS, {}),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(fmt: str = "human", level: int = logging.INFO) -> None:
    """Installs one handler on the root logger (kopf's own loggers included)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def decision(logger: logging.Logger | logging.LoggerAdapter, pipeline: str, reason: str, message: str,
             level: int = logging.INFO, **numbers: Any) -> None:
    """Logs one decision: `pipeline` is namespace/name, `reason` a CamelCase reason (the
    same as the Event's), `numbers` the figures behind it (replicas=..., forecast=...)."""
    logger.log(level, message, extra={DECISION_FIELDS: {"pipeline": pipeline, "reason": reason, **numbers}})
