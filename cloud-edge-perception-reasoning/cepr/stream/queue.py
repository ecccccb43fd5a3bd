"""The edge's side of the cloud request queue: a Redis stream read by a consumer group of cloud workers.

API::

    q = CloudQueue(url, stream="cepr:requests", group="cloud", results="cepr:results", dead="cepr:dead",
                   maxlen=1000, max_retries=3)
    q.submit(request_id, summary_bytes, task, meta: dict, image: bytes | None = None,
             deadline: float | None = None) -> str   # the entry id; deadline: absolute time.time() seconds
    for r in q.results(block_ms=1000): ...       # StreamResult objects that arrived (one XREAD; then it returns)
    q.accepted, q.answered, q.shed, q.dead_lettered, q.expired, q.retried, q.in_flight   # counters (from Redis)
    q.counts() -> dict                           # all of them at once, plus backlog, pending, late, duplicates
    q.dead_letters(count=100) -> list[dict]      # the dead-letter stream, with reasons
    q.reset()                                    # delete this queue's streams, counters and id records

Guarantees (all state lives in Redis, updated by Lua scripts, so each step is atomic and the counters are shared by
every edge process and worker):

* every request accepted by ``submit`` ends in exactly one of answered, shed, dead-lettered or expired (a worker
  read it after its ``deadline`` and acknowledged it without calling the cloud), or is still in flight:
  ``accepted == answered + shed + dead_lettered + expired + in_flight`` always, and ``in_flight`` equals the
  stream's length (settled entries are acknowledged and deleted in the same script that counts them);
* the backlog is bounded: when more than ``maxlen`` requests are waiting or being worked on, ``submit`` sheds the
  oldest waiting ones (acknowledged, deleted, counted in ``shed``, and a ``shed`` result tells the edge to keep its
  own answer); requests a worker already holds are shed only when fewer than the excess are waiting (an answer
  that comes for one then counts ``late``), so the cloud's work in progress is not thrown away;
* idempotent by request id: a second ``submit`` of an id returns the first entry's id and counts a ``duplicate``;
  a second answer to the same request (a slow worker whose message was claimed by another) counts ``late`` and
  writes no second result;
* a request a Redis that is down cannot take raises :class:`QueueUnavailable` and is not counted (it was never
  accepted): the edge keeps its own answer.
"""

from __future__ import annotations

import json
import time
from typing import Self

from cepr.errors import CeprError
from cepr.stream.codec import StreamResult, decode_result, encode_request

COUNTERS = ("accepted", "answered", "shed", "dead_lettered", "expired", "retried")
# per-entry hashes kept while a request is in flight, removed when it is settled or shed
ENTRY_HASHES = ("errors", "started", "failures")


class QueueUnavailable(CeprError):
    """Redis did not take the request (down, restarting, unreachable)."""


# KEYS: stream, counters, results. ARGV: group, request id, maxlen, id ttl, results maxlen, now, entry fields...
SUBMIT_LUA = """
local stream, counters, results = KEYS[1], KEYS[2], KEYS[3]
local group, rid, maxlen, ttl, rmax, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local reqkey = stream .. ':req:' .. rid
local prev = redis.call('GET', reqkey)
if prev then
  redis.call('HINCRBY', counters, 'duplicates', 1)
  return {'duplicate', prev, {}}
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local eid = redis.call('XADD', stream, '*', unpack(fields))
redis.call('SET', reqkey, eid, 'EX', ttl)
redis.call('HINCRBY', counters, 'accepted', 1)
local shed = {}
local over = redis.call('XLEN', stream) - maxlen
if over > 0 then
  -- the oldest requests still waiting go first; those a worker already holds only when not enough are waiting
  local last = nil
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, ld = nil, nil
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then ld = g[i + 1] end
      end
      if name == group then last = ld end
    end
  end
  local old = {}
  if last then old = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', over) end
  if #old < over then
    local seen = {}
    for _, e in ipairs(old) do seen[e[1]] = true end
    for _, e in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', over)) do
      if #old < over and not seen[e[1]] then old[#old + 1] = e end
    end
  end
  for _, e in ipairs(old) do
    local id, f = e[1], e[2]
    local r, t = 'entry:' .. id, '0'
    for i = 1, #f, 2 do
      if f[i] == 'id' then r = f[i + 1] elseif f[i] == 't' then t = f[i + 1] end
    end
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    redis.call('HDEL', stream .. ':errors', id)
    redis.call('HDEL', stream .. ':started', id)
    redis.call('HDEL', stream .. ':failures', id)
    if redis.call('SET', stream .. ':done:' .. r, 'shed', 'NX', 'EX', ttl) then
      local kind = 'shed'
      if redis.call('EXISTS', stream .. ':req:' .. r) == 0 then kind = 'foreign_shed' end
      redis.call('HINCRBY', counters, kind, 1)
      redis.call('XADD', results, 'MAXLEN', '~', rmax, '*', 'id', r, 'status', 'shed',
                 'reason', 'shed: more than ' .. maxlen .. ' requests waiting; the oldest go first',
                 'submitted_at', t, 'answered_at', now, 'attempts', '0')
      shed[#shed + 1] = r
    end
  end
end
return {'accepted', eid, shed}
"""

# KEYS: stream, counters, results, dead. ARGV: group, entry id, request id, kind (answered | dead_lettered | expired), id ttl,
# results maxlen, n result fields, result fields..., dead-letter fields...
SETTLE_LUA = """
local stream, counters, results, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, eid, rid, kind, ttl, rmax = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local nres = tonumber(ARGV[7])
redis.call('XACK', stream, group, eid)
redis.call('XDEL', stream, eid)
redis.call('HDEL', stream .. ':errors', eid)
redis.call('HDEL', stream .. ':started', eid)
redis.call('HDEL', stream .. ':failures', eid)
if not redis.call('SET', stream .. ':done:' .. rid, kind, 'NX', 'EX', ttl) then
  redis.call('HINCRBY', counters, 'late', 1)
  return 0
end
local counter = kind
if redis.call('EXISTS', stream .. ':req:' .. rid) == 0 then counter = 'foreign_' .. kind end
redis.call('HINCRBY', counters, counter, 1)
local res = {}
for i = 8, 7 + nres do res[#res + 1] = ARGV[i] end
redis.call('XADD', results, 'MAXLEN', '~', rmax, '*', unpack(res))
if kind == 'dead_lettered' then
  local d = {}
  for i = 8 + nres, #ARGV do d[#d + 1] = ARGV[i] end
  redis.call('XADD', dead, '*', unpack(d))
end
return 1
"""


def connect(url: str):
    """A redis-py client (bytes in, bytes out) for ``url``; a clear error when the package is missing."""
    try:
        import redis
    except ImportError:
        raise CeprError("cepr.stream needs redis-py: pip install -e '.[stream]'") from None
    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=10)


def ensure_group(client, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing; reading starts at the stream's first entry."""
    import redis

    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


class CloudQueue:
    def __init__(self, url: str, stream: str = "cepr:requests", group: str = "cloud", results: str = "cepr:results",
                 dead: str = "cepr:dead", maxlen: int = 1000, max_retries: int = 3, results_maxlen: int = 10000,
                 id_ttl_s: int = 86400):
        if maxlen < 1:
            raise CeprError(f"maxlen must be >= 1, got {maxlen}")
        self.url, self.stream, self.group, self.results_stream, self.dead = url, stream, group, results, dead
        self.maxlen, self.max_retries = int(maxlen), int(max_retries)
        self.results_maxlen, self.id_ttl_s = int(results_maxlen), int(id_ttl_s)
        self.counters_key = f"{stream}:counters"
        self.client = connect(url)
        self._submit = self.client.register_script(SUBMIT_LUA)
        self._cursor: bytes | str | None = None
        try:
            ensure_group(self.client, stream, group)
            self._cursor = self._last_result_id()
        except Exception as e:
            if _is_connection_error(e):
                raise QueueUnavailable(f"Redis at {url} is not reachable: {e}") from None
            raise

    # ---- edge -> cloud ----------------------------------------------------------------------------------------
    def submit(self, request_id: str, summary_bytes: bytes, task: str, meta: dict | None = None,
               image: bytes | None = None, deadline: float | None = None) -> str:
        """Queue one hard sample; returns its stream entry id (the first one's for a duplicate id). Sheds the
        oldest requests when the backlog passes ``maxlen``; their ids are in ``last_shed``. ``deadline``
        (absolute, ``time.time()`` seconds): a worker that reads the request later does not call the cloud, it
        acknowledges it as ``expired`` (an ``expired`` result tells the edge); None: no deadline."""
        fields = encode_request(request_id, summary_bytes, task, meta, image, deadline=deadline)
        flat = [x for kv in fields.items() for x in kv]
        now = time.time()
        try:
            status, eid, shed = self._submit(
                keys=[self.stream, self.counters_key, self.results_stream],
                args=[self.group, request_id, self.maxlen, self.id_ttl_s, self.results_maxlen, repr(now), *flat])
        except Exception as e:
            if _is_connection_error(e):
                raise QueueUnavailable(f"request {request_id!r} not queued: Redis at {self.url} is not "
                                       f"reachable ({e})") from None
            raise
        self.last_shed = [s.decode() for s in shed]
        self.last_duplicate = status == b"duplicate"
        return eid.decode()

    # ---- cloud -> edge ----------------------------------------------------------------------------------------
    def _last_result_id(self):
        last = self.client.xrevrange(self.results_stream, count=1)
        return last[0][0] if last else b"0-0"

    def results(self, block_ms: int = 1000, count: int = 100, from_start: bool = False):
        """Results written since the last call (since this queue was made, or since the beginning of the results
        stream with ``from_start``): one XREAD that waits up to ``block_ms`` for the first; yields
        :class:`StreamResult` and returns. Call it in a loop."""
        if from_start:
            self._cursor = b"0-0"
        try:
            reply = self.client.xread({self.results_stream: self._cursor}, count=count,
                                      block=None if block_ms is None else int(block_ms))
        except Exception as e:
            if _is_connection_error(e):
                raise QueueUnavailable(f"results not read: Redis at {self.url} is not reachable ({e})") from None
            raise
        for _name, entries in reply or []:
            for eid, fields in entries:
                self._cursor = eid
                yield decode_result(eid, fields)

    def wait_for(self, request_ids, timeout_s: float, block_ms: int = 200) -> dict[str, StreamResult]:
        """Read results until every id in ``request_ids`` has one or ``timeout_s`` passes: {id: result}."""
        want, got = set(request_ids), {}
        end = time.monotonic() + timeout_s
        while want - set(got) and time.monotonic() < end:
            for r in self.results(block_ms=block_ms):
                if r.request_id in want:
                    got[r.request_id] = r
        return got

    # ---- counters ---------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """accepted, answered, shed, dead_lettered, expired, retried, in_flight (accepted minus the settled), backlog
        (entries in the request stream: equals in_flight when only ``submit`` writes to it), pending (delivered
        to a worker, not yet acknowledged), late, duplicates and foreign_* (entries not written by ``submit``)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.counters_key)
        pipe.xlen(self.stream)
        pipe.xpending(self.stream, self.group)
        raw, backlog, pending = pipe.execute()
        c = {k.decode(): int(v) for k, v in raw.items()}
        out = {k: c.get(k, 0) for k in COUNTERS}
        out["in_flight"] = (out["accepted"] - out["answered"] - out["shed"] - out["dead_lettered"]
                            - out["expired"])
        out.update(backlog=int(backlog), pending=int(pending["pending"]), late=c.get("late", 0),
                   duplicates=c.get("duplicates", 0))
        out.update({k: v for k, v in c.items() if k.startswith("foreign_")})
        return out

    def _counter(self, name: str) -> int:
        return self.counts()[name]

    accepted = property(lambda self: self._counter("accepted"))
    answered = property(lambda self: self._counter("answered"))
    shed = property(lambda self: self._counter("shed"))
    dead_lettered = property(lambda self: self._counter("dead_lettered"))
    expired = property(lambda self: self._counter("expired"))
    retried = property(lambda self: self._counter("retried"))
    in_flight = property(lambda self: self._counter("in_flight"))

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The dead-letter stream's entries (oldest first): the original fields plus reason, attempts, worker."""
        out = []
        for eid, fields in self.client.xrange(self.dead, count=count):
            d = {k.decode(): v for k, v in fields.items()}
            for k in ("id", "reason", "worker", "attempts", "entry", "task", "failed_at"):
                if isinstance(d.get(k), bytes):
                    d[k] = d[k].decode(errors="replace")
            d["dead_entry"] = eid.decode()
            out.append(d)
        return out

    def reset(self) -> None:
        """Delete this queue's streams, counters and request-id records (a fresh start for a benchmark)."""
        keys = [self.stream, self.results_stream, self.dead, self.counters_key,
                *(f"{self.stream}:{h}" for h in ENTRY_HASHES)]
        for pattern in (f"{self.stream}:req:*", f"{self.stream}:done:*"):
            keys += list(self.client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i:i + 500])
        ensure_group(self.client, self.stream, self.group)
        self._cursor = b"0-0"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CloudQueue({self.url!r}, stream={self.stream!r}, maxlen={self.maxlen}, {json.dumps(self.counts())})"


def _is_connection_error(e: Exception) -> bool:
    try:
        import redis
    except ImportError:
        return False
    return isinstance(e, (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError))
