"""Two Django handlers behind one ASGI entry: the lean paths get their own.

``LEAN_PATH_PREFIXES`` (the API, health, metrics and live pages) are served by a Django
``ASGIHandler`` built from ``LEAN_MIDDLEWARE`` (async-native only: see
streamsite/middleware.py); every other path by Django's standard handler and ``MIDDLEWARE``.
Both resolve the same URLconf. Django's security checks read ``MIDDLEWARE``, which stays the
standard stack, so ``check --deploy`` needs no silencing.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from streamsite.compat import load_middleware_from


class LeanASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        load_middleware_from(self, settings.LEAN_MIDDLEWARE, is_async)


class PathRouter:
    """An ASGI app: lean paths to one handler, the rest to the other."""

    def __init__(self, *, standard, lean, prefixes: list[str]) -> None:
        self.standard = standard
        self.lean = lean
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope, receive, send):
        app = self.lean if scope["path"].startswith(self.prefixes) else self.standard
        return await app(scope, receive, send)
