-- One atomic check of every rule that applies to a request (see throttling/limiter.py).
--
-- KEYS[1..n]   one state key per rule
-- KEYS[n+1]    this minute's stats hash, KEYS[n+2] this minute's top-limited sorted set
-- ARGV[1]      mode: "c" check and consume, "p" peek (read only, no stats)
-- ARGV[2]      n, the number of rules
-- ARGV[3]      who is asking ("u:42" / "ip:1.2.3.4"), counted in the top-limited set on denial
-- ARGV[4]      latency histogram field of this process's previous call ("" = none)
-- ARGV[5]      near-limit ratio (remaining < limit * ratio counts as near the limit)
-- ARGV[6..]    per rule: layer, limit, period (µs), algorithm (t|s|f), shadow (0|1)
--
-- Invariant: either every enforcing rule admits the request and every admitting rule
-- consumes one unit, or nothing is consumed anywhere (all-or-nothing). Time is Redis's own.
--
-- Returns {allowed, denying rule index (0 = none), retry after µs,
--          then per rule: remaining, µs until fully restored, admitted by this rule (0|1)}.

local mode = ARGV[1]
local n = tonumber(ARGV[2])
local near_ratio = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Lua's default number-to-string keeps 14 digits; µs timestamps have 16.
local function int(x) return string.format('%d', x) end

local ok, level, remaining, reset, retry, layer, shadow = {}, {}, {}, {}, {}, {}, {}
local allowed, deny, deny_retry = 1, 0, 0

for i = 1, n do
  local b = 6 + (i - 1) * 5
  layer[i] = ARGV[b]
  local limit = tonumber(ARGV[b + 1])
  local period = tonumber(ARGV[b + 2])
  local algo = ARGV[b + 3]
  shadow[i] = ARGV[b + 4] == '1'
  local key = KEYS[i]
  if algo == 't' then
    -- Token bucket stored as its deficit ("level", the used part of the bucket) so a limit
    -- changed in the admin applies at once: capacity = limit, refill = limit per period.
    local lv = 0
    local s = redis.call('GET', key)
    if s then
      local l, ts = string.match(s, '^(%S+) (%S+)$')
      lv = tonumber(l) - (now - tonumber(ts)) * limit / period
      if lv < 0 then lv = 0 end
    end
    level[i] = lv
    ok[i] = lv + 1 <= limit
    if ok[i] and mode == 'c' then
      remaining[i] = math.floor(limit - lv - 1)
      reset[i] = (lv + 1) * period / limit
    else
      remaining[i] = math.max(0, math.floor(limit - lv))
      reset[i] = lv * period / limit
    end
    retry[i] = ok[i] and 0 or (lv + 1 - limit) * period / limit
  elseif algo == 'f' then
    local win = math.floor(now / period)
    local c = 0
    local s = redis.call('GET', key)
    if s then
      local w, cc = string.match(s, '^(%S+) (%S+)$')
      if tonumber(w) == win then c = tonumber(cc) end
    end
    level[i] = c
    ok[i] = c + 1 <= limit
    remaining[i] = math.max(0, limit - c - ((ok[i] and mode == 'c') and 1 or 0))
    reset[i] = (win + 1) * period - now
    retry[i] = ok[i] and 0 or reset[i]
  else
    -- Sliding window as an exact log: one sorted-set member per admitted request.
    local c
    if mode == 'c' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - period))
      c = redis.call('ZCARD', key)
    else
      c = redis.call('ZCOUNT', key, '(' .. int(now - period), '+inf')
    end
    level[i] = c
    ok[i] = c + 1 <= limit
    remaining[i] = math.max(0, limit - c - ((ok[i] and mode == 'c') and 1 or 0))
    reset[i] = period
    retry[i] = 0
    if not ok[i] then
      -- The request that must leave the window before one more fits.
      local first = redis.call('ZRANGEBYSCORE', key, '(' .. int(now - period), '+inf',
                               'WITHSCORES', 'LIMIT', c - limit, 1)
      retry[i] = tonumber(first[2]) + period - now
    end
  end
  if not ok[i] and not shadow[i] then
    allowed = 0
    if retry[i] >= deny_retry then
      deny, deny_retry = i, retry[i]
    end
  end
end

local out = {allowed, deny, math.ceil(deny_retry)}
for i = 1, n do
  out[#out + 1] = remaining[i]
  out[#out + 1] = math.ceil(reset[i])
  out[#out + 1] = ok[i] and 1 or 0
end
if mode ~= 'c' then
  return out
end

local parts = {}
for i = 1, n do
  local b = 6 + (i - 1) * 5
  local limit = tonumber(ARGV[b + 1])
  local period = tonumber(ARGV[b + 2])
  local algo = ARGV[b + 3]
  local flag = ''
  if allowed == 1 and ok[i] then
    local key = KEYS[i]
    if algo == 't' then
      local lv = level[i] + 1
      redis.call('SET', key, string.format('%.6f %d', lv, now),
                 'PX', int(math.ceil(lv * period / limit / 1000) + 1))
    elseif algo == 'f' then
      local win = math.floor(now / period)
      redis.call('SET', key, int(win) .. ' ' .. int(level[i] + 1),
                 'PX', int(math.ceil(reset[i] / 1000) + 1))
    else
      redis.call('ZADD', key, int(now), int(now) .. '.' .. int(level[i]))
      redis.call('PEXPIRE', key, int(math.ceil(period / 1000) + 1))
    end
    if remaining[i] < limit * near_ratio then flag = '!' end
  elseif not ok[i] then
    flag = shadow[i] and '~' or ((i == deny) and '-' or '')
  end
  parts[#parts + 1] = layer[i] .. flag
end

-- Stats: one counter per outcome signature ("a|global,plan!" = allowed, plan near its limit);
-- the reader splits signatures back into per-layer counts. Fields are few, so EXPIRE runs
-- only when a field is first created.
local stats, top = KEYS[n + 1], KEYS[n + 2]
local field = (allowed == 1 and 'a|' or 'd|') .. table.concat(parts, ',')
if redis.call('HINCRBY', stats, field, 1) == 1 then redis.call('EXPIRE', stats, 3900) end
if ARGV[4] ~= '' then redis.call('HINCRBY', stats, ARGV[4], 1) end
if allowed == 0 and ARGV[3] ~= '' then
  if tonumber(redis.call('ZINCRBY', top, 1, ARGV[3])) == 1 then
    redis.call('EXPIRE', top, 3900)
  end
end
return out
