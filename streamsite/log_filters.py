"""Logging filters the server's loggers use (settings.LOGGING)."""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = ("token", "csrf")
_SECRET = re.compile(r"([?&](?:%s)=)[^&\s\"']*" % "|".join(SECRET_PARAMS), re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the value of every ``?token=`` / ``&csrf=``-like query parameter replaced."""
    return _SECRET.sub(r"\1" + REDACTED, text) if "=" in text else text


class RedactQuerySecrets(logging.Filter):
    """Redacts API tokens and CSRF tokens from query strings in a record's message and
    arguments: uvicorn logs ``"WebSocket /ws/streams/x/?token=..." [accepted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True
