"""Shares: an athlete lets another user (a coach) read all their streams and workouts.

Each write drops this process's cached identities at once (a revoked viewer's open follows end
at their next access check); other processes see it when their cache entries expire
(AUTH_CACHE_TTL), so within ACCESS_RECHECK_INTERVAL + AUTH_CACHE_TTL everywhere.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from streams.access.identity import AccessError
from streams.models import Share


def share_out(share: Share) -> dict:
    return {
        "owner": share.owner.get_username(),
        "viewer": share.viewer.get_username(),
        "may_mark": share.may_mark,
        "created_at": share.created_at.isoformat(),
    }


@database_sync_to_async
def share_create(*, owner_id: int, viewer_name: str, may_mark: bool = False) -> dict:
    """Share the owner's data with the named user (``may_mark``: who may also add markers to
    the owner's rides): 404 when no such user, 400 for oneself, 409 when already shared."""
    viewer = get_user_model().objects.filter(username=viewer_name, is_active=True).first()
    if viewer is None:
        raise AccessError(404, f"no user named {viewer_name!r}")
    if viewer.pk == owner_id:
        raise AccessError(400, "you cannot share with yourself")
    try:
        with transaction.atomic():
            share = Share.objects.create(owner_id=owner_id, viewer=viewer, may_mark=may_mark)
    except IntegrityError:
        raise AccessError(409, f"already shared with {viewer_name!r}") from None
    return share_out(Share.objects.select_related("owner", "viewer").get(pk=share.pk))


@database_sync_to_async
def shares_of(*, user_id: int) -> dict:
    rows = Share.objects.select_related("owner", "viewer").order_by("created_at")
    return {
        "given": [share_out(s) for s in rows.filter(owner_id=user_id)],
        "received": [share_out(s) for s in rows.filter(viewer_id=user_id)],
    }


@database_sync_to_async
def share_delete(*, owner_id: int, viewer_name: str) -> None:
    deleted, _ = Share.objects.filter(owner_id=owner_id, viewer__username=viewer_name).delete()
    if not deleted:
        raise AccessError(404, f"no share with {viewer_name!r}")
