"""Who may read and write streams: bearer API tokens, staff sessions, public reads."""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.utils import timezone
from ninja.utils import check_csrf

from streams.models import ApiToken, hash_token


def bearer_token(request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


@database_sync_to_async
def user_for_token(raw: str):
    """The active user behind an active token, or None.

    Runs in a worker thread and closes its DB connection afterwards (channels'
    ``database_sync_to_async``): callers include WebSockets and SSE that live for hours.
    """
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(raw), is_active=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


async def writer(request):
    """The user allowed to write: a valid bearer token's, or a staff session's. None otherwise."""
    raw = bearer_token(request)
    if raw is not None:
        return await user_for_token(raw)
    user = await request.auser()
    if user.is_authenticated and user.is_active and user.is_staff:
        # A session rides on a cookie the browser sends by itself: require Django's CSRF token.
        if request.method not in ("GET", "HEAD", "OPTIONS") and check_csrf(request) is not None:
            return None
        return user
    return None
