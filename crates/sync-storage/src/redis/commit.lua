-- Applies one sync-storage commit to one account: atomically, and never moving a sequence
-- backwards unless the commit says it is a forced reset.
--
-- KEYS[1]  the account's state hash    (fields pts, qts, date, seq; decimal strings)
-- KEYS[2]  the account's channel hash  (field: channel id, value: its pts; decimal strings)
-- KEYS[3]  (a fenced commit only) the account's fence: its current fencing token, a decimal
--          string (absent: 0), as lease.lua keeps it
-- ARGV     has_state, state_reset, pts, qts, date, seq,
--          n_removed, <n_removed channel ids>,
--          n_channels, <n_channels triples: channel id, pts, reset>,
--          and for a fenced commit (three KEYS) one more: the commit's token
--
-- Returns {'ok'}, {'stale', sequence, stored, attempted}, {'corrupt', key, field, detail}
-- or {'fenced', current token}.
--
-- Invariants (they must match the Rust backends, src/rules.rs):
-- * All or nothing. Redis runs a script to its end with no other command in between, and
--   this script reads and checks everything BEFORE its first write: every rejection returns
--   from the checking phase, so a rejected commit writes nothing. The write phase only does
--   HSET/HDEL on keys already known to be hashes, which cannot fail half-way.
-- * Monotonic. pts, qts, seq and each channel's pts are only ever replaced by a value >= the
--   stored one, unless the commit flags a reset. Equal values pass (a repeated commit is
--   harmless). date is not a sequence: it is stored as given, with the state it belongs to.
--   Because scripts run one at a time, concurrent writers on one account are serialised
--   here and each is checked against the other's result: the stored values only grow.
-- * Order inside a commit: removed channels first, then the state, then the channel
--   entries in order, each checked against the value left by the steps before it.
-- * Numbers. Lua numbers are doubles: exact for the 32-bit sequences compared here. Channel
--   ids are 64-bit and are only ever used as strings (hash fields), never converted.
-- * Fenced. With a third key, the commit applies only if its token is the fence's value,
--   checked first, in the same script as the sequence checks: no acquisition (which bumps
--   the fence) can run between the check and the writes. Tokens are compared as decimal
--   strings, exactly (no conversion to a double). A plain commit (two keys) has no such
--   check and costs nothing more than before.

local state_key, channels_key, fence_key = KEYS[1], KEYS[2], KEYS[3]

-- A stored sequence must be a decimal 32-bit integer; anything else is corrupt data, which
-- we report rather than overwrite.
local function parse(value)
  if type(value) ~= 'string' or #value > 11 or not string.match(value, '^%-?%d+$') then
    return nil
  end
  local n = tonumber(value)
  if n < -2147483648 or n > 2147483647 then
    return nil
  end
  return n
end

if fence_key then
  local kind = redis.call('TYPE', fence_key)['ok']
  if kind ~= 'string' and kind ~= 'none' then
    return { 'corrupt', fence_key, '', 'a ' .. kind .. ' where a counter was expected' }
  end
  local current = redis.call('GET', fence_key) or '0'
  if current ~= ARGV[#ARGV] then
    return { 'fenced', current }
  end
end

for _, key in ipairs({ state_key, channels_key }) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    return { 'corrupt', key, '', 'a ' .. kind .. ' where a hash was expected' }
  end
end

local i = 1
local has_state, state_reset = ARGV[i] == '1', ARGV[i + 1] == '1'
local new_state = { ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5] }
i = i + 6

-- pending[channel id] = new pts (a string), or false when the commit removes the channel.
local pending = {}
local n_removed = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_removed do
  pending[ARGV[i]] = false
  i = i + 1
end

-- Checking phase: no writes before the end of it.
if has_state then
  local stored = redis.call('HMGET', state_key, 'pts', 'qts', 'date', 'seq')
  local names = { 'pts', 'qts', 'date', 'seq' }
  local present = 0
  for j = 1, 4 do
    if stored[j] then
      present = present + 1
    end
  end
  if present ~= 0 and present ~= 4 then
    return { 'corrupt', state_key, '', 'the state hash lacks a field' }
  end
  if present == 4 then
    local values = {}
    for j = 1, 4 do
      values[j] = parse(stored[j])
      if values[j] == nil then
        return { 'corrupt', state_key, names[j], 'not a 32-bit integer' }
      end
    end
    if not state_reset then
      -- date (index 3) is not a sequence and is not checked.
      for _, j in ipairs({ 1, 2, 4 }) do
        if tonumber(new_state[j]) < values[j] then
          return { 'stale', names[j], stored[j], new_state[j] }
        end
      end
    end
  end
end

local n_channels = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_channels do
  local id, pts, reset = ARGV[i], ARGV[i + 1], ARGV[i + 2] == '1'
  i = i + 3
  local stored = pending[id]
  if stored == nil then
    local raw = redis.call('HGET', channels_key, id)
    if raw then
      stored = parse(raw)
      if stored == nil then
        return { 'corrupt', channels_key, id, 'not a 32-bit integer' }
      end
    end
  elseif stored ~= false then
    stored = tonumber(stored)
  end
  if stored and not reset and tonumber(pts) < stored then
    return { 'stale', 'channel:' .. id, tostring(stored), pts }
  end
  pending[id] = pts
end

-- Write phase: every check passed.
if has_state then
  redis.call('HSET', state_key, 'pts', new_state[1], 'qts', new_state[2],
    'date', new_state[3], 'seq', new_state[4])
end
for id, pts in pairs(pending) do
  if pts == false then
    redis.call('HDEL', channels_key, id)
  else
    redis.call('HSET', channels_key, id, pts)
  end
end
return { 'ok' }
