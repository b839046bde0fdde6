"""Stream deletions, told to every process's hub over the Channels layer (channels-redis).

Each process has its own StreamHub, so a deletion made in one process must reach listeners
in all of them. ``announce_deleted`` ends this process's listeners at once and sends the names
to a group that every process's ``DeletionFeed`` listens on.
"""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer

from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)

GROUP = "streamsite.stream-deletions"
MESSAGE_TYPE = "streams.deleted"


async def announce_deleted(names: list[str], hub=None) -> None:
    if hub is not None:
        hub.notify_deleted(names)
    layer = get_channel_layer()
    if layer is None or not names:
        return
    try:
        await layer.group_send(GROUP, {"type": MESSAGE_TYPE, "names": names})
    except Exception as exc:  # the delete itself succeeded; other processes' listeners
        log.warning("could not broadcast deletion of %d streams: %s", len(names), exc)  # time out


class DeletionFeed:
    """One task per process: receives deletions from the group and ends local listeners."""

    def __init__(self, hub) -> None:
        self._hub = hub
        self._task: asyncio.Task | None = None
        self.joined = asyncio.Event()

    def start(self) -> None:
        if self._task is None and get_channel_layer() is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stream-deletion-feed")

    async def _run(self) -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel("streamsite.hub.")
        await layer.group_add(GROUP, channel)
        self.joined.set()
        try:
            while True:
                try:
                    message = await layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("deletion feed: %s; retrying", exc)
                    await asyncio.sleep(1)
                    continue
                if message.get("type") == MESSAGE_TYPE:
                    self._hub.notify_deleted(list(message.get("names", [])))
        finally:
            try:
                await asyncio.shield(layer.group_discard(GROUP, channel))
            except Exception:
                pass

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
