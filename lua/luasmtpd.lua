-- The Lua half of require "luasmtpd", compiled into the server.  The C half
-- (log, sleep, version) arrives as the module table.
local M = ...

-- The mail as HSYCO's SMTPSERVER JSON event value:
-- {"from":...,"to":...,"subject":...,"date":...,"contenttype":...,"returnpath":...,"body":[...]}
-- Each value goes through lua-cjson; the fields keep HSYCO's order, and "/"
-- is left unescaped as HSYCO writes it.  It runs on every message of a
-- typical script, so it makes one string concatenation and one cjson call
-- per field, and one for the whole body.
local cjson, encode   -- lua-cjson and its encode, loaded on first use
local function cjson_lib()
  cjson = cjson or require("cjson")
  encode = cjson.encode
  return cjson
end

-- cjson writes "/" as "\/", and "\/" only ever stands for "/" in its output.
-- A plain find jumps from one to the next (gsub would try a match at every
-- byte, ten times slower on a typical message).
local function unescape_slashes(json)
  local at = json:find("\\/", 1, true)
  if not at then return json end
  local pieces, n, from = {}, 0, 1
  repeat
    n = n + 1
    pieces[n] = json:sub(from, at - 1)
    from = at + 1
    at = json:find("\\/", from + 1, true)
  until not at
  pieces[n + 1] = json:sub(from)
  return table.concat(pieces)
end

-- A value as a string (tostring looks for a __tostring first: slow)
local function text(v)
  if type(v) == "string" then return v end
  return tostring(v or "")
end

local function field(mail, k)
  return encode(text(mail[k]))
end

function M.hsyco_json(mail)
  if type(mail) ~= "table" then
    error("bad argument #1 to 'hsyco_json' (mail table expected, got " .. type(mail) .. ")", 2)
  end
  if not encode then cjson_lib() end
  local lines = {}
  for i, line in ipairs(mail.body or {}) do
    lines[i] = text(line)
  end
  local json = '{"from":' .. field(mail, "from") .. ',"to":' .. field(mail, "to")
    .. ',"subject":' .. field(mail, "subject") .. ',"date":' .. field(mail, "date")
    .. ',"contenttype":' .. field(mail, "contenttype")
    .. ',"returnpath":' .. field(mail, "returnpath")
    .. ',"body":' .. (lines[1] and encode(lines) or "[]") .. "}"
  return unescape_slashes(json)
end

-- json(value): JSON text of a value as cjson writes it, but for two
-- things.  "/" is left as it is.  An empty table that stands for a list of
-- the mail table (recipients, attachments, header_list, body, and each
-- list of addresses) is written [], where cjson, which cannot tell, writes
-- {}: receivers that expect an array would break on a mail without
-- attachments.
local LIST_FIELDS = { recipients = true, attachments = true, header_list = true, body = true }
local JSON_DEPTH = 100

local function json_of(v, key, parent, depth, out)
  if type(v) ~= "table" then
    out[#out + 1] = encode(v)
    return
  end
  if depth > JSON_DEPTH then error("json: nested more than " .. JSON_DEPTH .. " deep", 0) end
  local n = #v
  if next(v) == nil then
    out[#out + 1] = (LIST_FIELDS[key] or parent == "addresses") and "[]" or "{}"
    return
  end
  local count = 0
  for _ in pairs(v) do count = count + 1 end
  if count == n then                          -- a list: 1..n and nothing else
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      json_of(v[i], nil, key, depth + 1, out)
    end
    out[#out + 1] = "]"
    return
  end
  out[#out + 1] = "{"
  local first = true
  for k, item in pairs(v) do
    if type(k) ~= "string" and type(k) ~= "number" then
      error("json: a " .. type(k) .. " key cannot be written", 0)
    end
    if not first then out[#out + 1] = "," end
    first = false
    out[#out + 1] = encode(tostring(k))
    out[#out + 1] = ":"
    json_of(item, k, key, depth + 1, out)
  end
  out[#out + 1] = "}"
end

function M.json(value)
  if not encode then cjson_lib() end
  local out = {}
  local ok, err = pcall(json_of, value, nil, nil, 1, out)
  if not ok then
    local msg = tostring(err):gsub("^[^:]*:%d+: ", "")   -- cjson's message, without our place
    error(msg:find("^json: ") and msg or "json: " .. msg, 2)
  end
  return unescape_slashes(table.concat(out))
end

-- watchdog and debounce keep their state in luasmtpd.store, so that it is
-- shared by the workers and survives a restart (docs/actions.md).
local can_wait = M._can_wait
M._can_wait = nil
local log = M._log        -- the server's own lines: no "script: " before them
M._log = nil
local YEAR = 31536000

-- A key of theirs, which becomes a store key behind a prefix.
local function state_key(key, fname)
  if type(key) == "number" then key = tostring(key) end
  if type(key) ~= "string" or key == "" or #key > 1000 then
    error("bad argument #1 to '" .. fname .. "' (a key of 1 to 1000 bytes expected)", 3)
  end
  return key
end

-- watchdog(key, seconds, fn): call fn(key) unless watchdog(key, ...) is
-- called again within seconds; each call re-arms it.  watchdog(key, nil)
-- disarms it.
--
-- The deadline is the value of store key "watchdog:KEY".  Each process
-- that knows it keeps a timer for it; when one goes off, the deadline is
-- read again (another worker may have moved it), and only the process
-- whose delete(key, deadline) succeeds runs the function: each deadline
-- fires once per server.  Deadlines left by an earlier run are re-armed at
-- start, and run on_watchdog(key) unless the script arms them again.
local WD = "watchdog:"
local dogs = {}      -- key -> this process's timer
local dog_fns = {}   -- key -> the function last armed here
local started = false
local at_start = {}  -- what the main chunk armed: key -> {seconds, fn} or false

local dog_due

local function dog_timer(key, deadline)
  local old = dogs[key]
  if old then old:cancel() end
  dogs[key] = M.after(math.min(YEAR, math.max(0, deadline - M.time())), function(self)
    if dogs[key] == self then dogs[key] = nil end
    return dog_due(key)
  end)
end

function dog_due(key)
  local skey = WD .. key
  local deadline = M.store.get(skey)
  if type(deadline) ~= "number" then        -- disarmed, or it fired elsewhere
    if not dogs[key] then dog_fns[key] = nil end
    return
  end
  if deadline - M.time() > 0.001 then       -- re-armed by another worker
    if not dogs[key] then dog_timer(key, deadline) end
    return
  end
  local won, err = M.store.delete(skey, deadline)
  if won == nil then
    log("warn", "watchdog:", key, err, "(tried again in a second)")
    if not dogs[key] then dog_timer(key, M.time() + 1) end
    return
  end
  if not won then return end                -- another worker, or a re-arm, came first
  local fn = dog_fns[key] or rawget(_G, "on_watchdog")
  if not dogs[key] then dog_fns[key] = nil end
  if type(fn) ~= "function" then
    log("warn", "watchdog:", key, "went off, armed before the server started: define on_watchdog(key) for it")
    return
  end
  return fn(key)
end

function M.watchdog(key, seconds, fn)
  if key == nil then
    error("bad argument #1 to 'watchdog' (key expected, got nil)", 2)
  end
  key = state_key(key, "watchdog")
  if seconds ~= nil then
    if type(seconds) ~= "number" or not (seconds >= 0 and seconds <= YEAR) then
      error("bad argument #2 to 'watchdog' (seconds out of range (0 to 31536000))", 2)
    end
    if type(fn) ~= "function" then
      error("bad argument #3 to 'watchdog' (function expected, got " .. type(fn) .. ")", 2)
    end
  end
  if not started then                       -- the main chunk: armed at start
    at_start[key] = seconds ~= nil and { seconds, fn }
    return true
  end
  if not can_wait() then                    -- on_close: as soon as the loop turns
    M.after(0, function() M.watchdog(key, seconds, fn) end)
    return true
  end
  local old = dogs[key]
  if old then old:cancel() end
  dogs[key] = nil
  if seconds == nil then
    dog_fns[key] = nil
    return M.store.delete(WD .. key)
  end
  local deadline = M.time() + seconds
  dog_fns[key] = fn
  dog_timer(key, deadline)
  return M.store.set(WD .. key, deadline)
end

-- At start: what the main chunk armed (a deadline that survived a restart
-- is kept: restarting does not postpone an alarm), then every deadline in
-- the store.
M.after(0, function()
  started = true
  local armed = at_start
  at_start = nil
  for key, a in pairs(armed) do
    if a then
      dog_fns[key] = a[2]
      local ok, err = M.store.add(WD .. key, M.time() + a[1])
      if ok == nil then log("warn", "watchdog:", key, err) end
    elseif not M.store.delete(WD .. key) then
      log("warn", "watchdog:", key, "not disarmed")
    end
  end
  for _, skey in ipairs(M.store.keys(WD, math.maxinteger)) do
    local key = skey:sub(#WD + 1)
    local deadline = M.store.get(skey)
    if type(deadline) == "number" and not dogs[key] then dog_timer(key, deadline) end
  end
end)

-- debounce(key, seconds): true the first time key is seen in a window of
-- seconds (the window starts then), false for the rest of it.  The window
-- is store key "debounce:KEY" (its value the window's end), which add()
-- opens for one caller of the whole server; each process remembers the
-- windows it has seen open, so a repeated call costs no store call.
-- Windows past their end are swept once the table has grown.
local windows, nwindows, sweep_at = {}, 0, 1024

function M.debounce(key, seconds)
  if key == nil then
    error("bad argument #1 to 'debounce' (key expected, got nil)", 2)
  end
  key = state_key(key, "debounce")
  if type(seconds) ~= "number" or not (seconds >= 0 and seconds <= YEAR) then
    error("bad argument #2 to 'debounce' (seconds expected, 0 to 31536000)", 2)
  end
  local now = M.time()
  local ends = windows[key]
  if ends and now < ends then return false end
  if seconds == 0 then return true end
  if not can_wait() then
    error("debounce waits for the store: call it from a hook or a timer's function", 2)
  end
  local skey = "debounce:" .. key
  local first, err = M.store.add(skey, now + seconds, seconds)
  if first == nil then                      -- the store failed: act, and say so
    log("warn", "debounce:", key, err, "(a window of this process only)")
    first = true
  end
  ends = not first and M.store.get(skey)
  if type(ends) ~= "number" then ends = now + seconds end
  if not windows[key] then
    nwindows = nwindows + 1
    if nwindows > sweep_at then
      for k, e in pairs(windows) do
        if e <= now then windows[k] = nil; nwindows = nwindows - 1 end
      end
      sweep_at = math.max(1024, 2 * nwindows)
    end
  end
  windows[key] = ends
  return first
end

-- The durable queue (lua/queue.c, docs/queue.md).  queue() checks a job
-- and has it written; deliver() runs one when the agent says it is due.
local Q = M._queue
M._queue = nil
local forward_check = M._forward_check
M._forward_check = nil

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- a job's options as the jobs table holds them ("/" left as it is, for
-- --queue-show and the sqlite3 shell)
local function encode_args(t) return unescape_slashes(cjson_lib().encode(t)) end

local function expect(cond, n, what)
  if not cond then error("bad argument #" .. n .. " to 'queue' (" .. what .. ")", 3) end
end

-- queue("forward", mail, opts) | queue("http", request) | queue("mqtt", topic, payload [, opts])
function M.queue(kind, a, b, c)
  local args, data
  if kind == "forward" then
    expect(type(a) == "table" and type(a.raw) == "string", 2, "mail table expected")
    expect(type(b) == "table", 3, "options table expected")
    expect(type(b.via) == "string" and b.via:match("^smtps?://"), 3, "via must be an smtp:// or smtps:// URL")
    args = copy(b)
    args.from = b.from or a.sender
    args.to = b.to or a.recipients
    if type(args.to) == "string" then args.to = { args.to } end
    if b.dsn == nil then args.dsn = a.dsn end   -- the client's DSN parameters go on too
    forward_check({ sender = args.from, recipients = args.to, dsn = args.dsn }, args)
    args.trace = false   -- the trace field is written now, at receipt
    args.mail = a.id
    data = (b.trace == false and "" or Q.trace(a)) .. a.raw
  elseif kind == "http" then
    expect(type(a) == "table" and type(a.url) == "string", 2, "request table with a url expected")
    expect(a.body == nil or type(a.body) == "string", 2, "body must be a string")
    args = copy(a)
    args.body = nil
    data = a.body or ""
  elseif kind == "mqtt" then
    expect(type(a) == "string" and a ~= "" and not a:find("[+#%z]"), 2, "topic name expected")
    expect(type(b) == "string", 3, "payload string expected")
    expect(c == nil or type(c) == "table", 4, "options table expected")
    args = c and copy(c) or {}
    args.topic = a
    data = b
  else
    error("bad argument #1 to 'queue' (\"forward\", \"http\" or \"mqtt\" expected)", 2)
  end
  local ok, encoded = pcall(encode_args, args)
  if not ok then error("queue: the options cannot be stored: " .. tostring(encoded), 2) end
  return Q.put(kind, encoded, data)
end

-- How a delivery ended: nil when done, else the error and whether it is
-- permanent (SMTP 5xx, HTTP 4xx other than 408 and 429).
local run = {}

function run.forward(job, args)
  local mail = { raw = job.data, sender = args.from, recipients = args.to }
  local r, err = M.forward(mail, args)
  if not r then return err, false end
  -- refused recipients are retried (4xx) or given up (5xx)
  local later, failed, why = {}, {}, {}
  for _, rcpt in ipairs(args.to) do
    local reply = r.rejected[rcpt]
    if reply then
      why[#why + 1] = rcpt .. ": " .. reply
      if reply:sub(1, 1) == "5" then failed[#failed + 1] = rcpt else later[#later + 1] = rcpt end
    end
  end
  -- a refused login is a setting to mend, not a reason to drop the mail
  -- (Postfix's smtp_sasl_auth_soft_bounce)
  if r.code >= 400 and #why == 0 then return r.code .. " " .. r.reply, r.code >= 500 and r.command ~= "AUTH" end
  if #why == 0 then return nil end
  if #failed > 0 and #later > 0 then
    -- two outcomes: the retried recipients become a job of their own
    local rest = copy(args)
    rest.to = later
    local id, perr = Q.put("forward", encode_args(rest), job.data)
    if not id then return "cannot queue the retry of " .. table.concat(later, ", ") .. ": " .. perr, false end
    later = {}
  end
  args.to = #failed > 0 and failed or later
  return table.concat(why, "; "), #failed > 0, args
end

function run.http(job, args)
  local req = copy(args)
  req.body = job.data ~= "" and job.data or nil
  req.headers = copy(args.headers or {})
  req.headers["Luasmtpd-Job"] = job.id   -- for the receiver's deduplication
  local r, err = M.http(req)
  if not r then return err, false end
  if r.status < 400 then return nil end
  return "HTTP " .. r.status, r.status < 500 and r.status ~= 408 and r.status ~= 429
end

function run.mqtt(job, args)
  local ok, err = M.mqtt.publish(args.topic, job.data,
    { qos = args.qos, retain = args.retain, timeout = args.timeout, hold = false })
  if ok then return nil end
  return err, false
end

local function failed_hook(job, args, err)
  local hook = rawget(_G, "on_queue_failed")
  if type(hook) ~= "function" then
    log("warn", "queue: job", job.id, "is dead:", err)
    return
  end
  local ok, herr = pcall(hook, { id = job.id, kind = job.kind, error = err, attempts = job.attempts + 1,
    created = job.created, args = args, size = #job.data })
  if not ok then log("error", "queue: on_queue_failed:", herr) end
end

local settings   -- the queue's options, read at the first delivery

-- Outcomes that could not be written (a full disk): job id -> the finish
-- to write.  Such a job is not delivered again; the agent stops for a
-- while and, when it comes to the job next, writes the outcome first.
-- Only a restart before that delivers it again (at least once).
local unmarked = {}
local UNMARKED_PAUSE = 5

local function finish(id, ...)
  local done, err = Q.finish(id, ...)
  if done then
    unmarked[id] = nil
    return done
  end
  if not unmarked[id] then
    log("warn", "queue: job", id, "outcome not written (" .. tostring(err) .. "); kept, written again later")
  end
  unmarked[id] = table.pack(...)
  Q.pause(UNMARKED_PAUSE)
  return nil, err
end

Q.agent(function(job)
  local pending = unmarked[job.id]
  if pending then return finish(job.id, table.unpack(pending, 1, pending.n)) end
  local args = cjson_lib().decode(job.args)
  local ok, err, permanent, newargs = pcall(run[job.kind] or function() return "unknown kind", true end, job, args)
  if not ok then err, permanent = "delivery failed: " .. tostring(err), false end
  if err == nil then
    log("info", "queue: job", job.id, job.kind, "delivered")
    return finish(job.id, "done")
  end
  settings = settings or Q.settings()
  local set = settings
  local delay = math.min(set.retry_max, set.retry_min * 2 ^ math.min(job.attempts, 30))
  local encoded = newargs and encode_args(newargs)
  if not permanent and os.time() + delay >= job.expires then
    err, permanent = "expired after " .. (job.attempts + 1) .. " attempts: " .. err, true
  end
  if permanent then
    local done, ferr = finish(job.id, "dead", err, 0, encoded)
    failed_hook(job, newargs or args, err)
    return done, ferr
  end
  log("info", "queue: job", job.id, "deferred", string.format("%ds:", delay), err)
  return finish(job.id, "retry", err, os.time() + delay, encoded)
end)

-- --replay --dry-run: each action says what it would do and succeeds, so a
-- script can be tried on a message without touching anything.
if M._dry_run then
  local function said(what, ...)
    local parts = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      parts[i] = type(v) == "table" and (v.raw and "mail " .. tostring(v.id) or "{...}") or tostring(v)
    end
    log("dry-run:", what, table.concat(parts, " "))
  end
  local function args_of(t)
    local shown = {}
    for i, a in ipairs(t) do shown[i] = a end
    return table.concat(shown, " ")
  end
  M.exec = function(t) said("exec", args_of(t)); return { status = 0, stdout = "", stderr = "" } end
  M.http = function(t)
    said("http", t.method or (t.body and "POST" or "GET"), t.url)
    return { status = 200, headers = {}, body = "" }
  end
  M.mqtt.publish = function(topic, payload) said("mqtt.publish", topic, #payload .. " bytes"); return true end
  M.save = function(mail, dir) said("save", mail, "into", dir); return dir .. "/new/(dry run)" end
  M.write = function(path, data) said("write", path, #data .. " bytes"); return path end
  M.forward = function(mail, o)
    said("forward", mail, "via", o.via)
    return { code = 250, reply = "2.0.0 dry run", command = "DATA", rejected = {} }
  end
  M.queue = function(kind, a, b) said("queue", kind, a, b); return "DRYRUN0000000000" end
end


-- Every action is timed and told to the console and to /metrics: its
-- kind, its target and how it ended (ok; refused: the other side said no;
-- error; timeout).  What it returns comes back as it was.
do
  local action_done, clock = M._action, M._clock
  M._action, M._clock = nil, nil
  local judges = {
    exec = function(r) return r.status == 0 and "ok" or "refused", "exit " .. tostring(r.status) end,
    http = function(r) return r.status < 400 and "ok" or "refused", "HTTP " .. tostring(r.status) end,
    forward = function(r) return r.code < 400 and "ok" or "refused", tostring(r.code) .. " " .. tostring(r.reply) end,
  }
  -- ok, ...: what the action returned, passed on; a misuse it raised is
  -- raised again at the script's line (done is tail-called: level 2).
  local function done(kind, target, t0, ok, ...)
    if not ok then
      local err = ...
      if type(err) == "string" then error((err:gsub("^luasmtpd%.lua:%d+: ", "")), 2) end
      error(err, 0)
    end
    local r1, r2 = ...
    local result, detail
    if not r1 then
      detail = tostring(r2)
      result = detail:find("timed out", 1, true) and "timeout" or "error"
    elseif judges[kind] and type(r1) == "table" then
      result, detail = judges[kind](r1)
    else
      result, detail = "ok", tostring(r2 ~= nil and r2 or r1)
    end
    action_done(kind, tostring(target or ""), t0, result, detail)
    return ...
  end
  -- The action is called as raw.<name>(...), so that a misuse is still
  -- reported against its own name ("bad argument #1 to 'publish'").
  local function traced(kind, name, f, target)
    local code = ("local raw, done, clock, target, pcall = ...\n"
      .. "local function call(...) return raw.%s(...) end\n"
      .. "return function(...) return done(%q, target(...), clock(), pcall(call, ...)) end"):format(name, kind)
    return load(code, "=luasmtpd.lua")({ [name] = f }, done, clock, target, pcall)
  end
  local function arg(n) return function(...) return (select(n, ...)) end end
  local function field(k) return function(t) return type(t) == "table" and t[k] or t end end
  M.exec = traced("exec", "exec", M.exec, function(t) return type(t) == "table" and t[1] or nil end)
  M.http = traced("http", "http", M.http, field("url"))
  M.mqtt.publish = traced("mqtt", "publish", M.mqtt.publish, arg(1))
  M.save = traced("save", "save", M.save, arg(2))
  M.write = traced("write", "write", M.write, arg(1))
  M.forward = traced("forward", "forward", M.forward, function(_, o) return type(o) == "table" and o.via or nil end)
  M.queue = traced("queue", "queue", M.queue, arg(1))
end
