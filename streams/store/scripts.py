"""The Lua scripts behind stream writes and the range read, run through
redis-py's ``register_script``.

``register_script`` sends EVALSHA and reloads the script on NOSCRIPT, so these keep working
after ``SCRIPT FLUSH``, a restart or a failover.

The write scripts check the caller against the stream's owner *inside* Redis, so "who may
write" and the write itself are one atomic step (no check-then-act race), and a publish stays
one round trip. Keys, in this order, for every write script:
``KEYS = [stream, meta, registry set, registry version, registry access]``.
A refusal answers ``{0, owner id or '', visibility or ''}`` so the caller can tell a reader
(403) from a stranger (404).
"""

from functools import cache

from redis.asyncio import Redis


@cache
def registered(source: str):
    """A registered script, usable with any client or pipeline (``client=`` at call time)."""
    return Redis().register_script(source)


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

# Shared head of the write scripts. ARGV[1] name, ARGV[2] caller id ('' = none),
# ARGV[3] caller name, ARGV[4] '1' when the caller manages every stream.
# Sets `owner`, `visibility`, `exists`; returns the refusal when the caller may not write.
_WRITE_GUARD = """
local owner = redis.call('HGET', KEYS[2], 'owner')
local visibility = redis.call('HGET', KEYS[2], 'visibility')
local exists = redis.call('EXISTS', KEYS[1]) == 1
local manager = ARGV[4] == '1'
if owner == false then owner = '' end
if visibility == false then visibility = '' end
local claimed = owner ~= '' or exists
if claimed and not manager and (owner == '' or owner ~= ARGV[2]) then
  return {0, owner, visibility}
end
"""

# ARGV[5] visibility for a new stream, ARGV[6] MAXLEN ('0' = none), ARGV[7] now (ms),
# ARGV[8] number of entries, then per entry: field count, field, value, ...
# Returns {1, registry changed (0/1), id, id, ...}, or {2, ended_ms, ended_reason} when the
# ride ended (docs/rides.md: a ride that ended stays ended; nothing is written).
PUBLISH_LUA = _WRITE_GUARD + """
local ended = redis.call('HGET', KEYS[2], 'ended_ms')
if ended then
  return {2, ended, redis.call('HGET', KEYS[2], 'ended_reason') or ''}
end
local changed = 0
if not claimed and ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'owner_name', ARGV[3], 'visibility', ARGV[5], 'created_ms', ARGV[7])
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[5] .. '|' .. ARGV[2])
  changed = 1
end
local reply = {1, 0}
local i = 9
for e = 1, tonumber(ARGV[8]) do
  local n = tonumber(ARGV[i])
  local args = {'XADD', KEYS[1]}
  if ARGV[6] ~= '0' then
    args[3] = 'MAXLEN'; args[4] = '~'; args[5] = ARGV[6]
  end
  args[#args + 1] = '*'
  for j = i + 1, i + 2 * n do args[#args + 1] = ARGV[j] end
  reply[#reply + 1] = redis.call(unpack(args))
  i = i + 1 + 2 * n
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then changed = 1 end
if changed == 1 then redis.call('INCR', KEYS[4]) end
reply[2] = changed
return reply
"""

# ARGV[5] visibility ('' = keep; for a new stream: the default, ARGV[8]), ARGV[6] ftp
# ('' = keep, '-' = clear), ARGV[7] now (ms), ARGV[8] default visibility, ARGV[9] plan and
# ARGV[10] plan_start (as ftp; a workout plan's id and its start, in ride seconds).
# Returns {1, created (0/1), owner, visibility, ftp, owner name, plan, plan_start}.
SETTINGS_LUA = _WRITE_GUARD + """
local created = 0
if not exists then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'streamsite-mkstream', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', KEYS[1], 'streamsite-mkstream')
  created = 1
end
if owner == '' and not claimed and ARGV[2] ~= '' then
  owner = ARGV[2]
  redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'owner_name', ARGV[3], 'created_ms', ARGV[7])
end
local new_visibility = ARGV[5]
if new_visibility == '' then new_visibility = visibility end
if new_visibility == '' then new_visibility = ARGV[8] end
redis.call('HSET', KEYS[2], 'visibility', new_visibility)
if ARGV[6] == '-' then redis.call('HDEL', KEYS[2], 'ftp')
elseif ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'ftp', ARGV[6]) end
if ARGV[9] == '-' then redis.call('HDEL', KEYS[2], 'plan')
elseif ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'plan', ARGV[9]) end
if ARGV[10] == '-' then redis.call('HDEL', KEYS[2], 'plan_start')
elseif ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'plan_start', ARGV[10]) end
local index = new_visibility .. '|' .. owner
if redis.call('HGET', KEYS[5], ARGV[1]) ~= index then
  redis.call('HSET', KEYS[5], ARGV[1], index)
  redis.call('INCR', KEYS[4])
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then redis.call('INCR', KEYS[4]) end
return {1, created, owner, new_visibility, redis.call('HGET', KEYS[2], 'ftp') or '',
        redis.call('HGET', KEYS[2], 'owner_name') or '', redis.call('HGET', KEYS[2], 'plan') or '',
        redis.call('HGET', KEYS[2], 'plan_start') or ''}
"""

# Returns {1, 1 when a stream was deleted}; a missing stream without metadata is {1, 0}.
DELETE_LUA = _WRITE_GUARD + """
local deleted = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
if deleted == 1 or owner ~= '' then redis.call('INCR', KEYS[4]) end
return {1, deleted}
"""

# ARGV[1] name, ARGV[2] new owner id, ARGV[3] new owner name, ARGV[4] visibility if unset.
# Returns {1 when the stream exists, visibility}.
CLAIM_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local visibility = redis.call('HGET', KEYS[2], 'visibility')
if visibility == false then visibility = ARGV[4] end
redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'owner_name', ARGV[3], 'visibility', visibility)
redis.call('HSET', KEYS[5], ARGV[1], visibility .. '|' .. ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[4])
return {1, visibility}
"""

# The delete of an archive (``POST /api/streams/{name}/archive`` with ``delete_stream``): only
# the entries the archive read, only while the caller may still write the stream and it still
# has the owner the archive saw. ARGV[5] the last archived id, ARGV[6] the owner id the archive
# read ('' = none). Entries after ARGV[5] (published meanwhile) stay; when none remain the
# stream goes as DELETE_LUA deletes it. Returns {1, 1 when the stream was deleted, entries
# removed}, or the refusal {0, owner id, visibility} (also when the owner changed).
ARCHIVE_DELETE_LUA = _WRITE_GUARD + """
if owner ~= ARGV[6] then return {0, owner, visibility} end
local newer = redis.call('XRANGE', KEYS[1], '(' .. ARGV[5], '+', 'COUNT', 1)
if #newer == 0 then
  local removed = 0
  if exists then removed = redis.call('XLEN', KEYS[1]) end
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('INCR', KEYS[4])
  return {1, exists and 1 or 0, removed}
end
return {1, 0, redis.call('XTRIM', KEYS[1], 'MINID', '=', newer[1][1])}
"""

# The end of a ride (docs/rides.md): the end marker entry {_end: reason} and, in the metadata,
# ended_ms (the marker's time, by Redis' clock), ended_reason and end_id, owner-checked as a
# publish. ARGV[5] the reason, ARGV[6] the last entry id the caller saw ('' = any: an explicit
# end; the janitor's idle end passes it, so an entry published meanwhile keeps the ride going).
# Returns {1, 1 when this call ended it, ended_ms, reason, end id}; an ended ride answers its
# existing end ({1, 0, ...}); {-1} for a missing stream, {-2} when a newer entry arrived, or
# the refusal {0, owner id, visibility}.
END_LUA = _WRITE_GUARD + """
if not exists then return {-1} end
local ended = redis.call('HGET', KEYS[2], 'ended_ms')
if ended then
  return {1, 0, ended, redis.call('HGET', KEYS[2], 'ended_reason') or '', redis.call('HGET', KEYS[2], 'end_id') or ''}
end
if ARGV[6] ~= '' then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 and last[1][1] ~= ARGV[6] then return {-2} end
end
local id = redis.call('XADD', KEYS[1], '*', '_end', ARGV[5])
local ms = string.match(id, '^(%d+)')
redis.call('HSET', KEYS[2], 'ended_ms', ms, 'ended_reason', ARGV[5], 'end_id', id)
return {1, 1, ms, ARGV[5], id}
"""

# A marker on a ride (docs/rides.md): the entry {_marker: label, _ride_s: ride second} and, in the
# metadata, the list of markers (JSON [[id, ride_s, label], ...], at most ARGV[5]). The caller's
# right was decided against the owner the caller read (ARGV[1], '' = none): a stream that changed
# hands since is refused. The ride second is ARGV[3] (ms of ride time at the stream's newest
# sample, '' = no sample yet: 0) plus the time since that sample's entry (ARGV[4], ms), by
# Redis' clock, the clock of the entry ids. ARGV[2] the label, ARGV[6] MAXLEN ('0' = none).
# Returns {1, id, ride_s}; {-1} for a missing stream, {0, owner, visibility} when the owner
# changed, {2, ended_ms, reason} for an ended ride, {3, count} when it has ARGV[5] markers.
MARKER_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
if owner ~= ARGV[1] then return {0, owner, redis.call('HGET', KEYS[2], 'visibility') or ''} end
local ended = redis.call('HGET', KEYS[2], 'ended_ms')
if ended then return {2, ended, redis.call('HGET', KEYS[2], 'ended_reason') or ''} end
local stored = redis.call('HGET', KEYS[2], 'markers')
local markers = {}
if stored then markers = cjson.decode(stored) end
if #markers >= tonumber(ARGV[5]) then return {3, #markers} end
local ride_ms = 0
if ARGV[3] ~= '' then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  ride_ms = tonumber(ARGV[3]) + math.max(0, now_ms - tonumber(ARGV[4]))
end
local ride_s = string.format('%.3f', ride_ms / 1000)
local args = {'XADD', KEYS[1]}
if ARGV[6] ~= '0' then
  args[3] = 'MAXLEN'; args[4] = '~'; args[5] = ARGV[6]
end
args[#args + 1] = '*'
args[#args + 1] = '_marker'; args[#args + 1] = ARGV[2]
args[#args + 1] = '_ride_s'; args[#args + 1] = ride_s
local id = redis.call(unpack(args))
markers[#markers + 1] = {id, ride_s, ARGV[2]}
redis.call('HSET', KEYS[2], 'markers', cjson.encode(markers))
return {1, id, ride_s}
"""

# The workout an ended ride was archived as, in its metadata (docs/rides.md), while the stream
# still has metadata. KEYS[1] the metadata; ARGV[1] the workout id. Returns 1 when recorded.
ARCHIVED_AS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'workout_id', ARGV[1])
return 1
"""

# Let go of a lock only while its holder holds it. KEYS[1] the lock; ARGV[1] the holder.
UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
