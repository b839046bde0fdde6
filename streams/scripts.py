"""The seed plan's two Lua scripts, run through redis-py's ``register_script``.

``register_script`` sends EVALSHA and reloads the script on NOSCRIPT, so these keep working
after ``SCRIPT FLUSH``, a restart or a failover (the seed's "SCRIPT LOAD once and cache the SHA"
breaks there).
"""

from redis.asyncio import Redis

STREAM_INFO_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
local length = redis.call('XLEN', KEYS[1])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local first_id = false
local last_id = false
if #first > 0 then first_id = first[1][1] end
if #last > 0 then last_id = last[1][1] end
return {length, first_id, last_id}
"""

SAFE_RANGE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
local count = tonumber(ARGV[3])
if count then
  return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', count)
end
return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])
"""


async def run_stream_info_script(client: Redis, key: str):
    """[length, first_id or None, last_id or None], or None when the key is missing."""
    return await client.register_script(STREAM_INFO_LUA)(keys=[key], client=client)


async def run_safe_range_script(client: Redis, key: str, start: str, end: str, count: int | None):
    """Raw XRANGE reply, or None when the key is missing."""
    args = [start, end, "" if count is None else str(count)]
    return await client.register_script(SAFE_RANGE_LUA)(keys=[key], args=args, client=client)
