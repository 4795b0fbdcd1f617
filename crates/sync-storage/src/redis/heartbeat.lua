-- A fleet member's heartbeat: marks it alive until now + ttl and answers the live members.
--
-- KEYS[1]  the registry's members: a sorted set, member -> end of its beat, in milliseconds
--          of the server's clock
-- ARGV[1]  the member, ARGV[2] its ttl in milliseconds
-- Returns every live member (in score order; the client sorts them by name).
--
-- Invariants:
-- * Server time only: now comes from TIME here, never from a client, so members on hosts
--   with skewed clocks agree on who is alive. (Allowed before writes: Redis replicates a
--   script's effects, not the script.)
-- * Pruned here: entries whose beat ended (score <= now) are removed before the answer, so
--   a member that stopped beating drops out once its ttl has passed and the set does not
--   grow with departed members.
-- * Scores are milliseconds since the epoch (about 2^41): exact in a double.

local members_key = KEYS[1]
local kind = redis.call('TYPE', members_key)['ok']
if kind ~= 'zset' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. members_key .. ' is a ' .. kind .. ', not a sorted set')
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', members_key, now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', members_key, '-inf', now)
return redis.call('ZRANGE', members_key, 0, -1)
