-- riskstream feature store: features for a batch of events, then record them. One call per batch.
--
-- State is one compact MessagePack value per entity, so an event costs Redis about four calls
-- (GET and SET of its account and its device), each entity loaded and saved once per batch:
--   {prefix}:{a:<account>}  -> { ev = {t, code, usd_cents, event_id, ...}, dv = {device, first_seen, ...} }
--   {prefix}:{d:<device>}   -> { ac = {account, first_seen, ...}, ss = {t, event_id, ...} }
-- (The braces are Redis Cluster hash tags: each key is its own slot unit.)
--
-- ARGV: prefix, retention_ms, entity_ttl_ms, n, then n x (event_id, account_id, device_id, event_time, kind_code, usd_cents)
-- Returns n x 10 integers in the order of catalogue.rs STORE_FEATURES (USD sums in cents).
-- The Rust MemoryStore implements the same algorithm; the conformance suite holds them equal.
local prefix = ARGV[1]
local retention = tonumber(ARGV[2])
local entity_ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local HOUR = 3600000
local DAY = 86400000
-- Per-entity caps (memory bound): oldest events / latest-seen links are dropped first.
local MAX_EVENTS, MAX_LINKS = 1000, 500

local loaded, dirty = {}, {}
local function load(key, empty)
  local s = loaded[key]
  if s then return s end
  local raw = redis.call('GET', key)
  if raw then s = cmsgpack.unpack(raw) else s = empty() end
  loaded[key] = s
  return s
end

-- Flat list of (id, first_seen) pairs: count ids first seen before t, whether `id` was, and
-- record `id` at min(first_seen, t).
local function link(list, id, t)
  local before, seen_before, found = 0, 0, false
  for j = 1, #list, 2 do
    local first = list[j + 1]
    if first < t then before = before + 1 end
    if list[j] == id then
      found = true
      if first < t then seen_before = 1 end
      if t < first then list[j + 1] = t end
    end
  end
  if not found and #list < 2 * MAX_LINKS then
    list[#list + 1] = id
    list[#list + 1] = t
  end
  return before, seen_before
end

-- Drops entries of a flat list with `stride` fields per entry whose time (field 1) is before `min_t`.
local function trim(list, stride, min_t)
  local out = {}
  for j = 1, #list, stride do
    if list[j] >= min_t then
      for k = 0, stride - 1 do out[#out + 1] = list[j + k] end
    end
  end
  return out
end

local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 6
  local eid, acct, dev = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local t = tonumber(ARGV[b + 3])
  local code, usd = ARGV[b + 4], tonumber(ARGV[b + 5])
  local akey = prefix .. ':{a:' .. acct .. '}'
  local dkey = prefix .. ':{d:' .. dev .. '}'
  local a = load(akey, function() return { ev = {}, dv = {} } end)
  local d = load(dkey, function() return { ac = {}, ss = {} } end)

  -- account events in [t - 24h, t); is this event already recorded?
  local mo1, mo24, usd1, usd24, cred24, login24 = 0, 0, 0, 0, 0, 0
  local ev, known = a.ev, false
  for j = 1, #ev, 4 do
    local s, c = ev[j], ev[j + 1]
    if ev[j + 3] == eid then known = true end
    if s >= t - DAY and s < t then
      if c == 'm' then
        mo24 = mo24 + 1
        usd24 = usd24 + ev[j + 2]
        if s >= t - HOUR then
          mo1 = mo1 + 1
          usd1 = usd1 + ev[j + 2]
        end
      elseif c == 'c' then
        cred24 = cred24 + 1
      elseif c == 'l' then
        login24 = login24 + 1
      end
    end
  end
  if not known then
    local m = #ev
    ev[m + 1] = t
    ev[m + 2] = code
    ev[m + 3] = usd
    ev[m + 4] = eid
  end
  ev = trim(ev, 4, t - retention)
  if #ev > 4 * MAX_EVENTS then
    -- keep the newest events
    local oldest, at = nil, 1
    for j = 1, #ev, 4 do if not oldest or ev[j] < oldest then oldest, at = ev[j], j end end
    for _ = 1, 4 do table.remove(ev, at) end
  end
  a.ev = ev

  local devices, seen_dev = link(a.dv, dev, t)
  local accounts = link(d.ac, acct, t)

  -- capture sessions on the device in [t - 24h, t)
  local sessions, seen_ses = 0, false
  local ss = d.ss
  for j = 1, #ss, 2 do
    if ss[j] >= t - DAY and ss[j] < t then sessions = sessions + 1 end
    if ss[j + 1] == eid then seen_ses = true end
  end
  if code == 's' then
    if not seen_ses and #ss < 2 * MAX_EVENTS then
      ss[#ss + 1] = t
      ss[#ss + 1] = eid
    end
    d.ss = trim(ss, 2, t - retention)
  end
  dirty[akey] = true
  dirty[dkey] = true

  local o = i * 10
  out[o + 1] = mo1
  out[o + 2] = mo24
  out[o + 3] = usd1
  out[o + 4] = usd24
  out[o + 5] = cred24
  out[o + 6] = login24
  out[o + 7] = devices
  out[o + 8] = 1 - seen_dev
  out[o + 9] = accounts
  out[o + 10] = sessions
end
for key in pairs(dirty) do
  redis.call('SET', key, cmsgpack.pack(loaded[key]), 'PX', entity_ttl)
end
return out
