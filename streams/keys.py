"""Every Redis key that belongs to one stream is built here, and only here.

A stream's entries live at ``<prefix><name>`` (what a device XADDs to directly); its metadata
(owner, visibility, FTP) in a hash at ``<prefix>_meta:<name>``. Stream names cannot start with
``_``, so no metadata key is ever a stream's key. Scale-out to Redis Cluster changes only this
function (both keys must then share the stream's hash slot).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamKeys:
    stream: str
    meta: str


def stream_keys(prefix: str, name: str) -> StreamKeys:
    return StreamKeys(stream=prefix + name, meta=f"{prefix}_meta:{name}")


def stream_key(prefix: str, name: str) -> str:
    return stream_keys(prefix, name).stream


def events_key(prefix: str) -> str:
    """The service's own event stream (deletion notices between processes). The hash tag keeps
    it in one slot on a Redis Cluster; ``{`` cannot start a stream name, so it is never taken
    for a stream (nor listed)."""
    return prefix + "{_events}"
