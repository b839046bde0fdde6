"""Every Redis key the service uses is built here, and only here.

Streams are spread over ``REDIS_BUCKETS`` buckets (``crc32(name) % buckets``, fixed for the
life of the data). Every key of one stream, and the registry of its bucket, carry the bucket's
hash tag ``{b<N>}``, so they share one Redis Cluster slot: a write script may touch them all
atomically, and one ``XREAD`` may name every stream of a bucket.

==============================================  =============================================
``<prefix>{b<N>}:<name>``                       the stream's entries (what a device XADDs to;
                                                ``manage.py stream_key <name>`` prints it)
``<prefix>{b<N>}:_meta:<name>``                 owner, visibility, FTP (a hash)
``<prefix>{b<N>}:_registry``                    the bucket's stream names (a set)
``<prefix>{b<N>}:_registry:version``            bumped by every change of the two below
``<prefix>{b<N>}:_registry:access``             name -> "visibility|owner id"
``<prefix>{b<N>}:_archiving:<name>``            the lock of the one process archiving an ended
                                                ride (SET NX PX; workouts/rides/janitor.py)
``<prefix>{_events}``                           deletion notices between processes
==============================================  =============================================

Stream names cannot start with ``_`` (streams/store/names.py), so no metadata or registry key is ever
taken for a stream. Standalone Redis uses the same layout (a one-node cluster is the same code);
data written by versions before the buckets moves with ``manage.py migrate_stream_keys``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache

from redis.crc import key_slot


@dataclass(frozen=True, slots=True)
class StreamKeys:
    stream: str
    meta: str
    bucket: int


@dataclass(frozen=True, slots=True)
class RegistryKeys:
    names: str
    version: str
    access: str

    def as_list(self) -> list[str]:
        return [self.names, self.version, self.access]


@dataclass(frozen=True)
class KeyLayout:
    prefix: str
    buckets: int

    def bucket(self, name: str) -> int:
        return zlib.crc32(name.encode()) % self.buckets

    def tag(self, bucket: int) -> str:
        return f"{self.prefix}{{b{bucket}}}:"

    def stream_keys(self, name: str) -> StreamKeys:
        bucket = self.bucket(name)
        tag = self.tag(bucket)
        return StreamKeys(stream=tag + name, meta=f"{tag}_meta:{name}", bucket=bucket)

    def stream(self, name: str) -> str:
        return self.tag(self.bucket(name)) + name

    def archive_lock(self, name: str) -> str:
        """The lock of the one process archiving the ended ride ``name`` (its stream's slot)."""
        return f"{self.tag(self.bucket(name))}_archiving:{name}"

    def registry(self, bucket: int) -> RegistryKeys:
        tag = self.tag(bucket)
        return RegistryKeys(names=tag + "_registry", version=tag + "_registry:version", access=tag + "_registry:access")

    def slot(self, bucket: int) -> int:
        """The cluster slot every key of a bucket lives in."""
        return self._slots[bucket]

    @cached_property
    def _slots(self) -> list[int]:
        return [key_slot(self.tag(b).encode()) for b in range(self.buckets)]

    @property
    def events(self) -> str:
        """The service's own event stream (deletion notices between processes); ``{`` cannot
        start a stream name, so it is never taken for a stream (nor listed)."""
        return self.prefix + "{_events}"

    @property
    def scan_pattern(self) -> str:
        """A SCAN MATCH pattern for every bucketed key (streams among them)."""
        return glob_escape(self.prefix) + "{b*}:*"

    def name_of(self, key: str) -> str | None:
        """The stream name a stream key stands for, or None when the key is not one (another
        prefix, a metadata or registry key, or a bucket the name does not hash to)."""
        if not key.startswith(self.prefix):
            return None
        match = _BUCKETED.match(key, len(self.prefix))
        if match is None:
            return None
        name = match.group(2)
        if name.startswith("_") or self.bucket(name) != int(match.group(1)):
            return None
        return name


_BUCKETED = re.compile(r"\{b(\d+)\}:(.+)", re.S)


def glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def legacy_stream_keys(prefix: str, name: str) -> StreamKeys:
    """Where versions before the buckets kept a stream (``manage.py migrate_stream_keys``)."""
    return StreamKeys(stream=prefix + name, meta=f"{prefix}_meta:{name}", bucket=-1)


def legacy_registry_keys(prefix: str) -> RegistryKeys:
    return RegistryKeys(names=f"{prefix}_registry", version=f"{prefix}_registry:version",
                        access=f"{prefix}_registry:access")


@lru_cache(maxsize=8)
def _layout(prefix: str, buckets: int) -> KeyLayout:
    return KeyLayout(prefix, buckets)


def key_layout(config) -> KeyLayout:
    """Where every key lives, by ``STREAM_KEY_PREFIX`` and ``REDIS_BUCKETS`` (a ``RedisConfig``)."""
    return _layout(config.stream_key_prefix, config.buckets)
