"""What a caller may do with a stream: the one keeper of the read and manage rules.

Every transport (REST, both SSEs, both WebSockets, the pages, the live metrics, workouts'
archive) asks ``may_read`` / ``check_read`` for reading and ``check_manage`` for writing; the
stream store fetches the metadata (``streams.store.services.check_readable``) and asks here.
A stream's metadata is anything with ``owner_id`` and ``visibility`` (``StreamMeta``).

A stranger gets 404, never 403: a private name does not leak. A reader who may not write gets
403.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from django.conf import settings

from streams.access.identity import (
    MANAGE_ALL_STREAMS,
    VIEW_ALL_STREAMS,
    AccessError,
    Actor,
    Identity,
)


@dataclass(frozen=True)
class Reader:
    """Who lists: ``may_read(owner_id, visibility)`` decides per stream (owner_id and
    visibility None for a stream nobody owns); ``key`` names the decision, so the filtered
    list is computed once per registry version for everyone who decides alike."""

    key: Hashable
    may_read: Callable[[int | None, str | None], bool]


def actor_of(ident: Identity) -> Actor:
    return Actor(user_id=ident.user_id, username=ident.username, manager=manages_all_streams(ident))


def require_scope(ident: Identity, scope: str) -> None:
    if scope not in ident.scopes:
        raise AccessError(403, f"this API token lacks the {scope!r} scope")


def require_user(ident: Identity) -> None:
    if not ident.authenticated:
        raise AccessError(401, "authentication required: send Authorization: Bearer <token>")


def manages_all_streams(ident: Identity) -> bool:
    return ident.has_perm(MANAGE_ALL_STREAMS) and "manage" in ident.scopes


def can_read_stream(ident: Identity, *, owner_id: int | None, visibility: str | None) -> bool:
    """Public streams: anyone. Private: the owner, their shared viewers, view-all users.
    Streams without an owner (made before ownership, or by a device's own XADD): anyone when
    STREAMS_PUBLIC_READ is on, else view-all users; a visibility set on them applies."""
    if ident.has_perm(VIEW_ALL_STREAMS) or ident.has_perm(MANAGE_ALL_STREAMS):
        return True
    if visibility == "public":
        return True
    if owner_id is None:
        return visibility is None and settings.STREAMS_PUBLIC_READ
    return ident.may_see_athlete(owner_id)


def can_manage_stream(ident: Identity, *, owner_id: int | None) -> bool:
    """Publish (to an existing stream), change settings, archive, delete."""
    if manages_all_streams(ident):
        return True
    return owner_id is not None and owner_id == ident.user_id


def can_mark_stream(ident: Identity, *, owner_id: int | None) -> bool:
    """Add a marker to a ride (docs/security.md): whoever may manage it, and a viewer whose
    share from the owner grants markers (``Share.may_mark``)."""
    if can_manage_stream(ident, owner_id=owner_id):
        return True
    return owner_id is not None and owner_id in ident.markers_from


def check_mark(ident: Identity, name: str, meta) -> None:
    """May the caller add a marker to ``name``: 401 anonymous, 403 without the ``publish``
    scope, 404 to whoever may not read it, 403 to a reader without the grant."""
    require_user(ident)
    require_scope(ident, "publish")
    if can_mark_stream(ident, owner_id=meta.owner_id):
        return
    if may_see(ident, meta):
        raise AccessError(
            403, f"only the owner of stream {name!r}, a stream manager or a viewer whose share grants markers may add one"
        )
    raise AccessError(404, f"stream {name!r} not found")


def may_see(ident: Identity, meta) -> bool:
    """Whether the caller may know the stream exists (its user may read it, whatever the
    token's scopes): decides 403 against 404."""
    return can_read_stream(ident, owner_id=meta.owner_id, visibility=meta.visibility)


def may_read(ident: Identity, meta) -> bool:
    """The read rule: a token with the ``read`` scope (sessions have every scope) and a
    caller who may see the stream."""
    return "read" in ident.scopes and may_see(ident, meta)


def check_read(ident: Identity, name: str, meta) -> None:
    """``may_read``, or the AccessError to answer: 403 for a token without the read scope,
    404 for a stream the caller may not see."""
    require_scope(ident, "read")
    if not may_read(ident, meta):
        raise AccessError(404, f"stream {name!r} not found")


def write_refusal(ident: Identity, name: str, meta) -> AccessError:
    """What to answer a write the store refused (its owner check runs inside Redis): 403 to a
    caller who may see the stream, 404 to one who may not (no leak)."""
    if may_see(ident, meta):
        return AccessError(403, f"only the owner of stream {name!r} or a stream manager may write to it")
    return AccessError(404, f"stream {name!r} not found")


def check_manage(
    ident: Identity, name: str, *, owner_id: int | None, visibility: str | None, scope: str = "manage"
) -> None:
    """404 to whoever may not read (a private name does not leak), 403 to a reader."""
    require_user(ident)
    require_scope(ident, scope)
    if can_manage_stream(ident, owner_id=owner_id):
        return
    if can_read_stream(ident, owner_id=owner_id, visibility=visibility):
        raise AccessError(403, f"only the owner of stream {name!r} or a stream manager may do that")
    raise AccessError(404, f"stream {name!r} not found")


def stream_reader(ident: Identity) -> Reader | None:
    """What a listing filters by; None when the caller may read every stream."""
    if ident.has_perm(VIEW_ALL_STREAMS) or ident.has_perm(MANAGE_ALL_STREAMS):
        return None
    return Reader(
        key=(ident.readable_owners(), settings.STREAMS_PUBLIC_READ),
        may_read=lambda owner_id, visibility: can_read_stream(ident, owner_id=owner_id, visibility=visibility),
    )
