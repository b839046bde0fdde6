"""Request body limits: the one rule for which limit a path has (the ASGI guard counts what
arrives, streamsite/server/guards.py; the middleware checks Content-Length first, for callers
that do not come through the guard such as Django's test client)."""

from __future__ import annotations

from django.conf import settings

MULTIPART_SLACK = 64 * 1024  # boundaries and form fields around an uploaded file


def human_size(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def body_limit(path: str) -> tuple[int, str]:
    """The byte limit of a request body on this path, and the setting that names it."""
    if path.startswith("/api/workouts/import"):
        return settings.WORKOUTS_MAX_UPLOAD + MULTIPART_SLACK, "WORKOUTS_MAX_UPLOAD"
    if path.startswith("/api/") and not path.startswith("/api/workouts"):
        return settings.STREAMS_MAX_BODY, "STREAMS_MAX_BODY"
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "DATA_UPLOAD_MAX_MEMORY_SIZE"


def too_big(path: str) -> str:
    """The answer's detail for a body over this path's limit."""
    limit, setting = body_limit(path)
    return f"request body is larger than the limit of {human_size(limit)} ({setting})"
