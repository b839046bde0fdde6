"""Readiness checks and the JSON snapshot behind /health/metrics and the admin dashboard."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import time

from asgiref.sync import sync_to_async
from django.db import connection
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.core.gc import FullCollections
from streams.core.instruments import operation_timings
from streams.engine.context import current_context, redis_context
from streams.live.capacity import capacity_stats
from streams.live.hub import StreamHub
from streams.store.registry import StreamRegistry
from workouts.rides.tracking import MetricsBoard

log = logging.getLogger(__name__)

REDIS_PING_TIMEOUT = 1.0


async def _timed_check(name: str, coro_fn) -> dict:
    started = time.perf_counter()
    try:
        await coro_fn()
    except Exception as exc:  # any failure fails the check; the details go to the log only
        log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        kind = "timed out" if isinstance(exc, (TimeoutError, RedisTimeoutError)) else "failed"
        return {"ok": False, "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "error": f"{name} check {kind} (details in the server log)"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def _redis_ping() -> None:
    ctx = await redis_context()
    async with asyncio.timeout(REDIS_PING_TIMEOUT):
        await asyncio.gather(*(_ping(node) for node in ctx.nodes.nodes()))
        if ctx.nodes.cluster:
            await _cluster_ok(ctx.nodes.nodes()[0])


async def _ping(node) -> None:
    async with node.main.client() as r:
        await r.ping()


async def _cluster_ok(node) -> None:
    """Every slot served (``CLUSTER INFO`` cluster_state), asked of one primary."""
    async with node.main.client() as r:
        info = await r.execute_command("CLUSTER", "INFO")
    if isinstance(info, (str, bytes)):
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    state = info.get("cluster_state")
    if state != "ok":
        raise RuntimeError(f"cluster_state:{state}")


def _db_select_one() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # a health probe every few seconds must not pin a connection


async def _pools_open() -> None:
    ctx = current_context()
    if ctx is not None and ctx.nodes.closed:
        raise RuntimeError("a Redis pool is shut down")


async def redis_up() -> bool:
    """Every primary answers PING (and a cluster serves every slot): ``streamsite_redis_up``."""
    return (await _timed_check("redis", _redis_ping))["ok"]


async def readiness() -> tuple[bool, dict]:
    checks = {
        "redis": await _timed_check("redis", _redis_ping),
        "database": await _timed_check("database", sync_to_async(_db_select_one, thread_sensitive=False)),
        "pools": await _timed_check("pools", _pools_open),
    }
    return all(c["ok"] for c in checks.values()), checks


def not_ready_because(checks: dict) -> str | None:
    """``"not ready: database"`` (the failed checks, by name), or None when all passed."""
    failed = [name for name, check in checks.items() if not check["ok"]]
    return "not ready: " + ", ".join(failed) if failed else None


def _pool(stats) -> dict:
    return {"total": stats.total, "in_use": stats.in_use, "available": stats.available, "waiting": stats.waiting}


async def snapshot() -> dict:
    """The JSON snapshot (/health/metrics, the admin dashboard): pools, hub, registry and operation timings."""
    ctx = await redis_context()
    try:
        registry = StreamRegistry.of(ctx)
        streams = len(await registry.names())  # one GET while the in-process copy is current
        age = registry.age_ms()
        registry = {"streams": streams, "age_ms": None if age is None else round(age)}
    except Exception as exc:  # Redis down: the rest of the snapshot still helps
        registry = {"streams": None, "age_ms": None, "error": f"{type(exc).__name__}: {exc}"}
    hub = StreamHub.of(ctx)
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "blocking_pool": _pool(ctx.nodes.stats("blocking")),
        "main_pool": _pool(ctx.nodes.stats("main")),
        "redis_nodes": [
            {"address": node.address, "main_pool": _pool(node.main.stats()), "blocking_pool": _pool(node.blocking.stats())}
            for node in ctx.nodes.nodes()
        ],
        "cluster": ctx.nodes.cluster,
        "hub": hub.stats().__dict__,
        "capacity": capacity_stats(hub),
        "live_metrics": board.stats() if (board := ctx.peek(MetricsBoard)) else MetricsBoard.EMPTY,
        "registry": registry,
        "publish_durability": _publish_durability(ctx),
        "operations": [op.as_dict() for op in operation_timings().snapshot()],
        "gc": _gc(),
    }


def _publish_durability(ctx) -> dict:
    """PUBLISH_DURABILITY and, over this process's nodes, the publish pipelines sent, those whose
    WAIT found no replica in time, and the publishes answered "not replicated" (503)."""
    batchers = [node.publishes for node in ctx.nodes.nodes()]
    return {
        "mode": ctx.config.publish_durability,
        "replica_timeout_ms": ctx.config.publish_replica_timeout_ms,
        "pipelines": sum(b.batches for b in batchers),
        "pipelines_unreplicated": sum(b.batches_unreplicated for b in batchers),
        "publishes_unreplicated": sum(b.calls_unreplicated for b in batchers),
    }


def _gc() -> dict:
    """Python's collector: automatic collections per generation and our clocked and deep ones
    (their pause is what listeners feel; see GC_FULL_COLLECT_INTERVAL, GC_DEEP_COLLECT_INTERVAL)."""
    last, deep = FullCollections.last_pause_ms, FullCollections.last_deep_pause_ms
    return {
        "thresholds": list(gc.get_threshold()),
        "collections": [generation["collections"] for generation in gc.get_stats()],
        "frozen_objects": gc.get_freeze_count(),
        "full_collections_clocked": FullCollections.runs,
        "last_full_pause_ms": None if last is None else round(last, 1),
        "deep_collections": FullCollections.deep_runs,
        "last_deep_pause_ms": None if deep is None else round(deep, 1),
    }
