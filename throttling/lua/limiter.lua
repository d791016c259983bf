-- One atomic check of every rule that applies to a request (see throttling/limiter.py).
--
-- KEYS[1..n]   one state key per rule
-- KEYS[n+1]    this minute's stats hash, KEYS[n+2] this minute's top-limited sorted set
-- ARGV[1]      mode: "c" check and consume, "p" peek (read only, no stats)
-- ARGV[2]      who is asking ("u:42" / "ip:1.2.3.4"), counted in the top-limited set on denial
-- ARGV[3]      latency bucket of this process's previous call ("" = none)
-- ARGV[4]      near-limit ratio (remaining < limit * ratio counts as near the limit)
-- ARGV[5..]    one per rule: "<layer> <limit> <period µs> <algorithm t|s|f> <shadow 0|1>"
--
-- Invariant: either every enforcing rule admits the request and every admitting rule
-- consumes one unit, or nothing is consumed anywhere (all-or-nothing). Time is Redis's own.
-- Cost matters (one call per API request): string state is read with one MGET, each rule
-- writes once (SET .. PX), and stats take one HINCRBY.
--
-- Returns one string: "<allowed 0|1> <refusing rule index, 0 = none> <retry after µs>"
-- then per rule ";<remaining> <µs until fully restored> <admits 0|1>".

local mode = ARGV[1]
local n = #KEYS - 2
local near_ratio = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Lua's default number-to-string keeps 14 digits; µs timestamps have 16.
local function int(x) return string.format('%d', x) end

local layer, limit, period, algo, shadow = {}, {}, {}, {}, {}
local string_keys, string_index = {}, {}
for i = 1, n do
  local l, q, w, a, s = string.match(ARGV[4 + i], '^(%S+) (%d+) (%d+) (%a) (%d)$')
  layer[i], limit[i], period[i], algo[i], shadow[i] = l, tonumber(q), tonumber(w), a, s == '1'
  if a ~= 's' then
    string_keys[#string_keys + 1] = KEYS[i]
    string_index[i] = #string_keys
  end
end
local values = {}
if #string_keys > 0 then values = redis.call('MGET', unpack(string_keys)) end

local ok, level, remaining, reset, retry = {}, {}, {}, {}, {}
local allowed, deny, deny_retry = 1, 0, 0
for i = 1, n do
  local q, w, a = limit[i], period[i], algo[i]
  if a == 't' then
    -- Token bucket stored as its deficit ("level", the used part of the bucket) so a limit
    -- changed in the admin applies at once: capacity = limit, refill = limit per period.
    local lv = 0
    local s = values[string_index[i]]
    if s then
      local l, ts = string.match(s, '^(%S+) (%S+)$')
      lv = tonumber(l) - (now - tonumber(ts)) * q / w
      if lv < 0 then lv = 0 end
    end
    level[i] = lv
    ok[i] = lv + 1 <= q
    if ok[i] and mode == 'c' then
      remaining[i] = math.floor(q - lv - 1)
      reset[i] = (lv + 1) * w / q
    else
      remaining[i] = math.max(0, math.floor(q - lv))
      reset[i] = lv * w / q
    end
    retry[i] = ok[i] and 0 or (lv + 1 - q) * w / q
  elseif a == 'f' then
    local win = math.floor(now / w)
    local c = 0
    local s = values[string_index[i]]
    if s then
      local sw, sc = string.match(s, '^(%S+) (%S+)$')
      if tonumber(sw) == win then c = tonumber(sc) end
    end
    level[i] = c
    ok[i] = c + 1 <= q
    remaining[i] = math.max(0, q - c - ((ok[i] and mode == 'c') and 1 or 0))
    reset[i] = (win + 1) * w - now
    retry[i] = ok[i] and 0 or reset[i]
  else
    -- Sliding window as an exact log: one sorted-set member per admitted request.
    local key = KEYS[i]
    local c
    if mode == 'c' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - w))
      c = redis.call('ZCARD', key)
    else
      c = redis.call('ZCOUNT', key, '(' .. int(now - w), '+inf')
    end
    level[i] = c
    ok[i] = c + 1 <= q
    remaining[i] = math.max(0, q - c - ((ok[i] and mode == 'c') and 1 or 0))
    reset[i] = w
    retry[i] = 0
    if not ok[i] then
      -- The request that must leave the window before one more fits.
      local first = redis.call('ZRANGEBYSCORE', key, '(' .. int(now - w), '+inf',
                               'WITHSCORES', 'LIMIT', c - q, 1)
      retry[i] = tonumber(first[2]) + w - now
    end
  end
  if not ok[i] and not shadow[i] then
    allowed = 0
    if retry[i] >= deny_retry then
      deny, deny_retry = i, retry[i]
    end
  end
end

local out = {allowed .. ' ' .. deny .. ' ' .. int(math.ceil(deny_retry))}
for i = 1, n do
  out[i + 1] = remaining[i] .. ' ' .. int(math.ceil(reset[i])) .. ' ' .. (ok[i] and 1 or 0)
end
if mode ~= 'c' then
  return table.concat(out, ';')
end

local parts = {}
for i = 1, n do
  local q, w, a = limit[i], period[i], algo[i]
  local flag = ''
  if allowed == 1 and ok[i] then
    local key = KEYS[i]
    if a == 't' then
      local lv = level[i] + 1
      redis.call('SET', key, string.format('%.6f %d', lv, now),
                 'PX', int(math.ceil(lv * w / q / 1000) + 1))
    elseif a == 'f' then
      local win = math.floor(now / w)
      redis.call('SET', key, int(win) .. ' ' .. int(level[i] + 1),
                 'PX', int(math.ceil(reset[i] / 1000) + 1))
    else
      redis.call('ZADD', key, int(now), int(now) .. '.' .. int(level[i]))
      redis.call('PEXPIRE', key, int(math.ceil(w / 1000) + 1))
    end
    if remaining[i] < q * near_ratio then flag = '!' end
  elseif not ok[i] then
    flag = shadow[i] and '~' or ((i == deny) and '-' or '')
  end
  parts[#parts + 1] = layer[i] .. flag
end

-- Stats: one counter per outcome signature and latency bucket ("a|global,plan!|37" =
-- allowed, plan near its limit, previous call in latency bucket 37); the reader splits them
-- back into per-layer counts. Fields are few, so EXPIRE runs only when one is first created.
local stats, top = KEYS[n + 1], KEYS[n + 2]
local field = (allowed == 1 and 'a|' or 'd|') .. table.concat(parts, ',') .. '|' .. ARGV[3]
if redis.call('HINCRBY', stats, field, 1) == 1 then redis.call('EXPIRE', stats, 3900) end
if allowed == 0 and ARGV[2] ~= '' then
  if tonumber(redis.call('ZINCRBY', top, 1, ARGV[2])) == 1 then
    redis.call('EXPIRE', top, 3900)
  end
end
return table.concat(out, ';')
