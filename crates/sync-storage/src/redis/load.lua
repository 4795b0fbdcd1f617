-- Reads an account's state hash and channel hash in one step, so the startup snapshot is
-- consistent (no commit can land between the two reads). Read-only.
-- KEYS[1] the state hash, KEYS[2] the channel hash.
return { redis.call('HMGET', KEYS[1], 'pts', 'qts', 'date', 'seq'), redis.call('HGETALL', KEYS[2]) }
