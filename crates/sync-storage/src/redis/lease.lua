-- The account lease operations, one script so that every one is atomic and reads the time
-- from the server alone (PEXPIRE / PTTL, never a client's clock).
--
-- KEYS[1]  the account's lease: a hash (owner, token) with a PX expiry; absent when free
-- KEYS[2]  the account's fence: a persistent decimal counter, the last token given out
-- ARGV[1]  the operation: 'acquire', 'renew', 'release' or 'holder'
--   acquire  ARGV[2] owner, ARGV[3] ttl in ms   -> {'held', token} or
--                                                   {'busy', owner, token, ms left}
--   renew    ARGV[2] owner, ARGV[3] ttl in ms,
--            ARGV[4] token                     -> {'ok'} or {'fenced', current}
--   release  ARGV[2] token                     -> {'ok'}
--   holder                                     -> {'free'} or {'held', owner, token, ms left}
-- Any operation may answer {'corrupt', key, detail} instead.
--
-- Invariants (they must match src/lease.rs, LeaseRecord):
-- * The fence never goes back. Only INCR changes it, it has no expiry, and no delete of the
--   account's state names it; a lease expiring or being released leaves it as it is.
-- * One owner at a time. The lease key exists exactly while someone holds the account (Redis
--   drops it at its expiry); acquire refuses while it names another owner, and every
--   successful acquire bumps the fence and writes the new token into the lease, so the
--   holder's token is always the fence's value.
-- * Only the current token renews or releases: both compare it with the fence, as decimal
--   strings (exact; no double conversion). A renewal re-creates an expired lease: nobody
--   acquired since (the fence would have moved), so the owner is still the rightful one.
-- * Checks before writes: a corrupt key is reported before anything is written.

local lease_key, fence_key = KEYS[1], KEYS[2]
local op = ARGV[1]

local kind = redis.call('TYPE', lease_key)['ok']
if kind ~= 'hash' and kind ~= 'none' then
  return { 'corrupt', lease_key, 'a ' .. kind .. ' where a hash was expected' }
end
kind = redis.call('TYPE', fence_key)['ok']
if kind ~= 'string' and kind ~= 'none' then
  return { 'corrupt', fence_key, 'a ' .. kind .. ' where a counter was expected' }
end
local current = redis.call('GET', fence_key) or '0'
if not string.match(current, '^%d+$') or #current > 19 then
  return { 'corrupt', fence_key, 'not a token' }
end

local function holder()
  local owner, token = unpack(redis.call('HMGET', lease_key, 'owner', 'token'))
  if not owner then
    return nil
  end
  -- A lease always has an expiry; -1 (none) would be corrupt, reported as 0 ms left.
  local left = math.max(redis.call('PTTL', lease_key), 0)
  return { owner, token or '0', tostring(left) }
end

if op == 'acquire' then
  local owner, ttl = ARGV[2], ARGV[3]
  local held = holder()
  if held and held[1] ~= owner then
    return { 'busy', held[1], held[2], held[3] }
  end
  redis.call('INCR', fence_key)
  -- Read back as the stored string: a Lua number would print large tokens as 1e+15.
  local token = redis.call('GET', fence_key)
  redis.call('DEL', lease_key)
  redis.call('HSET', lease_key, 'owner', owner, 'token', token)
  redis.call('PEXPIRE', lease_key, ttl)
  return { 'held', token }
elseif op == 'renew' then
  local owner, ttl, token = ARGV[2], ARGV[3], ARGV[4]
  if token ~= current then
    return { 'fenced', current }
  end
  redis.call('HSET', lease_key, 'owner', owner, 'token', token)
  redis.call('PEXPIRE', lease_key, ttl)
  return { 'ok' }
elseif op == 'release' then
  if ARGV[2] == current then
    redis.call('DEL', lease_key)
  end
  return { 'ok' }
elseif op == 'holder' then
  local held = holder()
  if not held then
    return { 'free' }
  end
  return { 'held', held[1], held[2], held[3] }
end
return redis.error_reply('lease.lua: unknown operation ' .. tostring(op))
