-- One atomic check of every rule that applies to a request (see throttling/limiter.py).
--
-- KEYS[1..n]   one state key per rule
-- ARGV[1]      mode: "c" check and consume, "p" peek (read only)
-- ARGV[i+1]    rule i, packed (struct '<ddBB', 18 bytes): limit, period µs,
--              algorithm (0 token bucket, 1 fixed window, 2 sliding window), shadow 0|1
--
-- Invariant: either every enforcing rule admits the request and every admitting rule
-- consumes one unit, or nothing is consumed anywhere (all-or-nothing). Time is Redis's own.
--
-- Cost matters (one call per API request; profiled in docs/performance.md): one TIME, one
-- MGET for all string state, one SET .. PX per admitting rule, nothing else for token buckets
-- and fixed windows. State is two packed doubles (struct.pack 'dd', 16 bytes), which is an
-- order of magnitude cheaper to read and write in Lua than formatted text; rules arrive
-- packed too (`tonumber` on text runs C's strtod: a tenth of the script's instructions under
-- callgrind). Numbers go out as an integer array, so no string is built for the reply.
-- Monitoring counters are not kept here: each process batches them and writes them once a
-- second (limiter.py, _Stats).
--
-- Returns {allowed 0|1, refusing rule index (0 = none), retry after µs,
--          then per rule: remaining, µs until fully restored, admits 0|1}.

local floor, ceil, max, tonumber = math.floor, math.ceil, math.max, tonumber
local pack, unpack_struct, format = struct.pack, struct.unpack, string.format
local consume = ARGV[1] == 'c'
local n = #KEYS
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- MGET answers nil for the sorted sets of sliding windows; those are read below.
local values = redis.call('MGET', unpack(KEYS))

local out = {1, 0, 0}
-- What to write if every enforcing rule admits, three slots per admitting rule:
-- key index (negative: a sliding window's log), new state (or the log's level), TTL ms.
local writes, nw = {}, 0
local allowed, deny, deny_retry = 1, 0, 0
for i = 1, n do
  local q, w, a, shadow = unpack_struct('<ddBB', ARGV[i + 1])
  local lv, remaining, reset, retry = 0
  local ok
  if a == 0 then
    -- Token bucket stored as its deficit ("level", the used part of the bucket) and when it
    -- was last written, so a limit changed in the admin applies at once: capacity = limit,
    -- refill = limit per period.
    local s = values[i]
    if s then
      local l0, t0 = unpack_struct('dd', s)
      lv = l0 - (now - t0) * q / w
      if lv < 0 then lv = 0 end
    end
    ok = lv + 1 <= q
    if ok and consume then
      remaining, reset = floor(q - lv - 1), (lv + 1) * w / q
      -- Expires when the bucket is full again: nothing to remember after that.
      writes[nw + 1], writes[nw + 2] = i, pack('dd', lv + 1, now)
      writes[nw + 3] = format('%d', ceil(reset / 1000) + 1)
      nw = nw + 3
    else
      remaining, reset = max(0, floor(q - lv)), lv * w / q
    end
    retry = ok and 0 or (lv + 1 - q) * w / q
  elseif a == 1 then
    -- Fixed window: the window number and its count.
    local win = floor(now / w)
    local s = values[i]
    if s then
      local w0, c0 = unpack_struct('dd', s)
      if w0 == win then lv = c0 end
    end
    ok = lv + 1 <= q
    remaining = max(0, q - lv - ((ok and consume) and 1 or 0))
    reset = (win + 1) * w - now
    retry = ok and 0 or reset
    if ok and consume then
      writes[nw + 1], writes[nw + 2] = i, pack('dd', win, lv + 1)
      writes[nw + 3] = format('%d', ceil(reset / 1000) + 1)
      nw = nw + 3
    end
  else
    -- Sliding window as an exact log: one sorted-set member per admitted request.
    local key = KEYS[i]
    local since = format('%d', now - w)
    if consume then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', since)
      lv = redis.call('ZCARD', key)
    else
      lv = redis.call('ZCOUNT', key, '(' .. since, '+inf')
    end
    ok = lv + 1 <= q
    remaining = max(0, q - lv - ((ok and consume) and 1 or 0))
    reset = w
    retry = 0
    if not ok then
      -- The request that must leave the window before one more fits.
      local first = redis.call('ZRANGEBYSCORE', key, '(' .. since, '+inf',
                               'WITHSCORES', 'LIMIT', lv - q, 1)
      retry = tonumber(first[2]) + w - now
    elseif consume then
      writes[nw + 1], writes[nw + 2] = -i, lv
      writes[nw + 3] = format('%d', ceil(w / 1000) + 1)
      nw = nw + 3
    end
  end
  local k = 3 * i
  out[k + 1], out[k + 2], out[k + 3] = remaining, ceil(reset), ok and 1 or 0
  if not ok and shadow == 0 then
    allowed = 0
    if retry >= deny_retry then
      deny, deny_retry = i, retry
    end
  end
end
out[1], out[2], out[3] = allowed, deny, ceil(deny_retry)
if allowed == 0 then
  return out
end

for j = 1, nw, 3 do
  local i = writes[j]
  if i > 0 then
    redis.call('SET', KEYS[i], writes[j + 1], 'PX', writes[j + 2])
  else
    local key, stamp = KEYS[-i], format('%d', now)
    redis.call('ZADD', key, stamp, stamp .. '.' .. writes[j + 1])
    redis.call('PEXPIRE', key, writes[j + 2])
  end
end
return out
