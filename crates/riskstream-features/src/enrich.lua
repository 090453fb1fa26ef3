-- riskstream feature store: features for a batch of events, then record them. One call per batch.
-- ARGV: prefix, retention_ms, device_ttl_ms, n, then n x (event_id, account_id, device_id, event_time, kind_code, usd_cents)
-- Returns n x 10 integers in the order of catalogue.rs STORE_FEATURES (USD sums in cents).
-- The Rust MemoryStore implements the same algorithm; the conformance suite holds them equal.
local prefix = ARGV[1]
local retention = tonumber(ARGV[2])
local device_ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local HOUR = 3600000
local DAY = 86400000
local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 6
  local eid, acct, dev = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local t = tonumber(ARGV[b + 3])
  local code, usd = ARGV[b + 4], ARGV[b + 5]
  local a_ev = prefix .. ':a:' .. acct .. ':ev'
  local a_dev = prefix .. ':a:' .. acct .. ':dev'
  local d_acc = prefix .. ':d:' .. dev .. ':acc'
  local d_ses = prefix .. ':d:' .. dev .. ':ses'

  -- account events in [t - 24h, t)
  local mo1, mo24, usd1, usd24, cred24, login24 = 0, 0, 0, 0, 0, 0
  local rows = redis.call('ZRANGE', a_ev, t - DAY, '(' .. t, 'BYSCORE', 'WITHSCORES')
  for j = 1, #rows, 2 do
    local m, s = rows[j], tonumber(rows[j + 1])
    local c, v = string.match(m, '|(%a)|(%d+)$')
    local recent = s >= t - HOUR
    if c == 'm' then
      local cents = tonumber(v)
      mo24 = mo24 + 1
      usd24 = usd24 + cents
      if recent then
        mo1 = mo1 + 1
        usd1 = usd1 + cents
      end
    elseif c == 'c' then
      cred24 = cred24 + 1
    elseif c == 'l' then
      login24 = login24 + 1
    end
  end
  redis.call('ZADD', a_ev, t, eid .. '|' .. code .. '|' .. usd)
  redis.call('ZREMRANGEBYSCORE', a_ev, '-inf', '(' .. (t - retention))
  redis.call('PEXPIRE', a_ev, retention)

  -- devices on the account, first-seen time as score
  local first = redis.call('ZSCORE', a_dev, dev)
  local is_new = 1
  if first and tonumber(first) < t then is_new = 0 end
  local devices = redis.call('ZCOUNT', a_dev, '-inf', '(' .. t)
  redis.call('ZADD', a_dev, 'LT', t, dev)
  redis.call('PEXPIRE', a_dev, device_ttl)

  -- accounts on the device
  local accounts = redis.call('ZCOUNT', d_acc, '-inf', '(' .. t)
  redis.call('ZADD', d_acc, 'LT', t, acct)
  redis.call('PEXPIRE', d_acc, device_ttl)

  -- capture sessions on the device in [t - 24h, t)
  local sessions = redis.call('ZCOUNT', d_ses, t - DAY, '(' .. t)
  if code == 's' then
    redis.call('ZADD', d_ses, t, eid)
    redis.call('ZREMRANGEBYSCORE', d_ses, '-inf', '(' .. (t - retention))
    redis.call('PEXPIRE', d_ses, retention)
  end

  local o = i * 10
  out[o + 1] = mo1
  out[o + 2] = mo24
  out[o + 3] = usd1
  out[o + 4] = usd24
  out[o + 5] = cred24
  out[o + 6] = login24
  out[o + 7] = devices
  out[o + 8] = is_new
  out[o + 9] = accounts
  out[o + 10] = sessions
end
return out
