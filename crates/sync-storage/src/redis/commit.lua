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
--   HSET/HDEL on keys already known to be hashes (or absent), which cannot fail half-way.
-- * Monotonic. pts, qts, seq and each channel's pts are only ever replaced by a value >= the
--   stored one, unless the commit flags a reset. Equal values pass (a repeated commit is
--   harmless). date is not a sequence: it is stored as given, with the state it belongs to.
--   Because scripts run one at a time, concurrent writers on one account are serialised
--   here and each is checked against the other's result: the stored values only grow.
-- * Order inside a commit: removed channels first, then the state, then the channel
--   entries in order, each checked against the value left by the steps before it.
-- * Corrupt data is reported, never overwritten: every stored value the commit would
--   replace is checked to be a decimal 32-bit integer first, and every key it writes to is
--   checked to be of the right type (or absent). A key the commit does not write is not
--   looked at (a state-only commit does not read the channel hash); the next commit or load
--   that touches it reports it.
-- * Numbers. Lua numbers are doubles: exact for the 32-bit sequences compared here. Channel
--   ids are 64-bit and are only ever used as strings (hash fields), never converted.
-- * Fenced. With a third key, the commit applies only if its token is the fence's value,
--   checked first, in the same script as the sequence checks: no acquisition (which bumps
--   the fence) can run between the check and the writes. Tokens are compared as decimal
--   strings, exactly (no conversion to a double). A plain commit (two keys) has no such
--   check and costs nothing more than before.
--
-- Cost. Most of a commit's server time is per redis.call (about 0.4 us each) and per pattern
-- match, so the script makes at most one call per key and phase: the type of a key is
-- learned from the WRONGTYPE error of its first read (redis.pcall) instead of a TYPE call,
-- all the channels are read by one HMGET and written by one HSET (and one HDEL), and a
-- stored value is only parsed when it is compared.

local state_key, channels_key, fence_key = KEYS[1], KEYS[2], KEYS[3]
local find, unpack = string.find, unpack

-- A read's error: a key of the wrong type is corrupt data, reported as such (the error path
-- alone pays for a TYPE call, for the message); any other error is the server's, raised.
local function read_error(key, reply, expected)
  if find(reply.err, 'WRONGTYPE', 1, true) then
    local kind = redis.call('TYPE', key)['ok']
    return { 'corrupt', key, '', 'a ' .. kind .. ' where ' .. expected .. ' was expected' }
  end
  return reply
end

-- A stored sequence must be a decimal 32-bit integer; anything else is corrupt data, which
-- we report rather than overwrite. (tonumber alone would also take ' 5', '1e2' or '0x10'.)
-- Strings become numbers by arithmetic (value + 0) rather than tonumber, which runs strtod
-- twice; the argument is a decimal string at every such place, so it cannot fail.
local function parse(value)
  if #value > 11 or not find(value, '^%-?%d+$') then
    return nil
  end
  local n = value + 0
  if n < -2147483648 or n > 2147483647 then
    return nil
  end
  return n
end

-- Commands get at most this many arguments from unpack, well below Lua's C stack limit
-- (unpack of thousands of values would fail, and must not do so in the write phase).
local CHUNK = 1000

if fence_key then
  local current = redis.pcall('GET', fence_key)
  if type(current) == 'table' then
    return read_error(fence_key, current, 'a counter')
  end
  current = current or '0'
  if current ~= ARGV[#ARGV] then
    return { 'fenced', current }
  end
end

local has_state, state_reset = ARGV[1] == '1', ARGV[2] == '1'
local n_removed = ARGV[7] + 0
local c = 8 + n_removed -- ARGV[c] is n_channels, the triples follow it
local n_channels = ARGV[c] + 0

-- Checking phase: no writes before the end of it.
if has_state then
  local stored = redis.pcall('HMGET', state_key, 'pts', 'qts', 'date', 'seq')
  if stored.err then
    return read_error(state_key, stored, 'a hash')
  end
  local pts, qts, date, seq = stored[1], stored[2], stored[3], stored[4]
  if pts or qts or date or seq then
    if not (pts and qts and date and seq) then
      return { 'corrupt', state_key, '', 'the state hash lacks a field' }
    end
    local p, q, d, s = parse(pts), parse(qts), parse(date), parse(seq)
    if not p then
      return { 'corrupt', state_key, 'pts', 'not a 32-bit integer' }
    elseif not q then
      return { 'corrupt', state_key, 'qts', 'not a 32-bit integer' }
    elseif not d then
      return { 'corrupt', state_key, 'date', 'not a 32-bit integer' }
    elseif not s then
      return { 'corrupt', state_key, 'seq', 'not a 32-bit integer' }
    end
    -- date (ARGV[5]) is not a sequence and is not checked.
    if not state_reset then
      if ARGV[3] + 0 < p then
        return { 'stale', 'pts', pts, ARGV[3] }
      elseif ARGV[4] + 0 < q then
        return { 'stale', 'qts', qts, ARGV[4] }
      elseif ARGV[6] + 0 < s then
        return { 'stale', 'seq', seq, ARGV[6] }
      end
    end
  end
end

-- The channel entries' new values as HSET takes them (id, pts, id, pts, ...), in the commit's
-- order: HSET keeps the last value of a field given twice, as the order inside a commit says.
local sets, n_sets = {}, 0
if n_channels > 0 then
  -- earlier[channel id] = the pts an earlier step of this commit gave it (a string), or false
  -- when the commit removes it: what a later entry for the same channel is checked against.
  local earlier = {}
  for k = 8, c - 1 do
    earlier[ARGV[k]] = false
  end
  -- The stored pts of the entries, read by one HMGET per CHUNK entries (the first also tells
  -- whether the hash is one), then checked in order.
  for first = 0, n_channels - 1, CHUNK do
    local last = first + CHUNK - 1
    if last >= n_channels then
      last = n_channels - 1
    end
    local ids = {}
    for e = first, last do
      ids[e - first + 1] = ARGV[c + 1 + 3 * e]
    end
    local stored = redis.pcall('HMGET', channels_key, unpack(ids))
    if stored.err then
      return read_error(channels_key, stored, 'a hash')
    end
    for e = first, last do
      local k = c + 1 + 3 * e
      local id, pts = ARGV[k], ARGV[k + 1]
      local before = earlier[id]
      if before == nil then
        -- Not touched earlier in this commit: the stored value, if any, is the one to check.
        local raw = stored[e - first + 1]
        if raw then
          before = parse(raw)
          if not before then
            return { 'corrupt', channels_key, id, 'not a 32-bit integer' }
          end
        end
      elseif before then
        before = before + 0
      end
      if before and ARGV[k + 2] ~= '1' and pts + 0 < before then
        return { 'stale', 'channel:' .. id, tostring(before), pts }
      end
      earlier[id] = pts
      sets[n_sets + 1], sets[n_sets + 2] = id, pts
      n_sets = n_sets + 2
    end
  end
elseif n_removed > 0 then
  -- Removals only: nothing was read from the channel hash, so check its type here.
  local kind = redis.call('TYPE', channels_key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    return { 'corrupt', channels_key, '', 'a ' .. kind .. ' where a hash was expected' }
  end
end

-- Write phase: every check passed.
if has_state then
  redis.call('HSET', state_key, 'pts', ARGV[3], 'qts', ARGV[4], 'date', ARGV[5],
    'seq', ARGV[6])
end
-- Removals first (straight from ARGV[8 .. c - 1]): an entry for a removed channel then sets
-- it again, as the order inside a commit says.
for first = 8, c - 1, CHUNK do
  redis.call('HDEL', channels_key, unpack(ARGV, first, math.min(first + CHUNK, c) - 1))
end
for first = 1, n_sets, 2 * CHUNK do
  redis.call('HSET', channels_key, unpack(sets, first, math.min(first + 2 * CHUNK - 1, n_sets)))
end
return { 'ok' }
