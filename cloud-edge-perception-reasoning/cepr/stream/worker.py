"""A cloud worker: reads hard samples from the request stream in a consumer group and answers them.

API::

    w = CloudWorker(url, backend, consumer_name, stream="cepr:requests", group="cloud", results="cepr:results",
                    dead="cepr:dead", max_retries=3, claim_idle_ms=30000, claim_every_s=None, block_ms=1000,
                    batch=1, retry_backoff_s=0.2)
    w.run_once() -> int          # one round: due retries, idle messages of dead consumers, new messages; how many
    w.run(stop_event, max_answers=None)    # until stop_event is set (or max_answers answered); survives Redis restarts
    w.stats                      # this worker's own counts: answered, failed, dead_lettered, expired, late, claimed

``backend``: anything with ``infer(CloudRequest) -> CloudResult`` (a cepr cloud backend, a ``CloudClient``, the
``client`` of :class:`cepr.cloud.module.CloudModule`; :func:`cepr.stream.backend.cloud_module_from_yaml` builds
one from a benchmark job's YAML).

Per message: a request read after its ``deadline`` (an absolute time the edge put on it) is acknowledged without
calling the cloud and counted ``expired`` (an ``expired`` result tells the edge). Otherwise decode
(:mod:`cepr.stream.codec`; a bad frame is a failure), ask the backend, then, in one Lua script, write the result,
count it, XACK and XDEL. A result with status ``ok`` or ``error`` (the cloud answered, even unusably) is an answer;
an exception or a ``fallback`` (timeout, open circuit) is a failure: the message stays pending, the failure is
counted in ``retried`` and its reason kept, and it is re-claimed by this worker after
``retry_backoff_s * failures``. The retry budget counts attempts, not deliveries: Redis keeps, per entry, how many
attempts were started (``<stream>:started``) and how many failed (``<stream>:failures``), so a worker restarted
under the same name, which reads its pending messages again, spends nothing. After ``1 + max_retries`` failed
attempts the message goes to the dead-letter stream with its last reason and a ``dead`` result tells the edge; so
does a message whose last ``1 + max_retries`` started attempts all ended without an outcome (it killed every worker
that took it). At start and every ``claim_every_s`` (default: half of ``claim_idle_ms``) XAUTOCLAIM takes over
messages idle longer than ``claim_idle_ms``: those of a worker that was killed, or that Redis kept across a restart.
"""

from __future__ import annotations

import logging
import threading
import time

from cepr.stream.codec import BadFrame, StreamResult, decode_request, encode_result, request_deadline
from cepr.stream.queue import SETTLE_LUA, connect, ensure_group

log = logging.getLogger(__name__)


class CloudWorker:
    def __init__(self, url: str, backend, consumer_name: str, stream: str = "cepr:requests", group: str = "cloud",
                 results: str = "cepr:results", dead: str = "cepr:dead", max_retries: int = 3,
                 claim_idle_ms: int = 30000, claim_every_s: float | None = None, block_ms: int = 1000,
                 batch: int = 1, retry_backoff_s: float = 0.2, results_maxlen: int = 10000, id_ttl_s: int = 86400):
        if not hasattr(backend, "infer"):
            raise TypeError(f"backend must have infer(CloudRequest) -> CloudResult, got {type(backend).__name__}")
        self.url, self.backend, self.name = url, backend, str(consumer_name)
        self.stream, self.group, self.results, self.dead = stream, group, results, dead
        self.max_retries, self.claim_idle_ms = int(max_retries), int(claim_idle_ms)
        self.claim_every_s = max(0.05, self.claim_idle_ms / 2e3) if claim_every_s is None else float(claim_every_s)
        self.block_ms, self.batch, self.retry_backoff_s = int(block_ms), max(1, int(batch)), float(retry_backoff_s)
        self.results_maxlen, self.id_ttl_s = int(results_maxlen), int(id_ttl_s)
        self.counters_key = f"{stream}:counters"
        self.errors_key = f"{stream}:errors"
        self.started_key = f"{stream}:started"  # entry id -> attempts started (a backend call begun)
        self.failures_key = f"{stream}:failures"  # entry id -> attempts that failed (raised, fell back, bad frame)
        self.client = connect(url)
        self._settle = self.client.register_script(SETTLE_LUA)
        self._retries: dict[bytes, float] = {}  # entry id -> when to re-claim it
        self._last_claim = 0.0
        self._started = False
        self.stats = {"answered": 0, "failed": 0, "dead_lettered": 0, "expired": 0, "late": 0, "claimed": 0}

    # ---- one round --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the group if missing and take back this consumer's own pending messages (after a restart of
        the worker under the same name, or of Redis)."""
        ensure_group(self.client, self.stream, self.group)
        own = self.client.xreadgroup(self.group, self.name, {self.stream: "0"}, count=1000)
        for _s, entries in own or []:
            for eid, _f in entries:
                self._retries.setdefault(eid, 0.0)
        self._last_claim = 0.0
        self._started = True

    def run_once(self) -> int:
        if not self._started:
            self.start()
        done = self._due_retries()
        if time.monotonic() - self._last_claim >= self.claim_every_s:
            done += self._autoclaim()
        block = self.block_ms
        if self._retries:  # wake up for the next retry
            block = min(block, max(1, int(1e3 * (min(self._retries.values()) - time.monotonic()))))
        reply = self.client.xreadgroup(self.group, self.name, {self.stream: ">"}, count=self.batch,
                                       block=block if done == 0 else 1)
        for _s, entries in reply or []:
            for eid, fields in entries:
                done += self._handle(eid, fields)
        return done

    def run(self, stop_event: threading.Event | None = None, max_answers: int | None = None) -> dict:
        """Answer until ``stop_event`` is set (or this worker answered ``max_answers``). Connection errors (Redis
        restarting) are logged and retried with a growing pause; nothing is lost meanwhile: what this worker held
        stays pending in Redis and is taken back when it reconnects."""
        stop_event = stop_event or threading.Event()
        pause = 0.1
        while not stop_event.is_set():
            if max_answers is not None and self.stats["answered"] >= max_answers:
                break
            try:
                self.run_once()
                pause = 0.1
            except Exception as e:
                if _is_missing_group(e):  # the stream was deleted under us (CloudQueue.reset): make it again
                    log.warning("worker %s: %s; creating the group again", self.name, e)
                    self._started = False
                    continue
                if not _is_connection_error(e):
                    raise
                log.warning("worker %s: Redis at %s not reachable (%s); retrying in %.1f s", self.name, self.url,
                            e, pause)
                self._started = False  # re-run start() (group, own pending) once it answers again
                stop_event.wait(pause)
                pause = min(2.0, pause * 2)
        return dict(self.stats)

    # ---- claiming ---------------------------------------------------------------------------------------------
    def _due_retries(self) -> int:
        now, done = time.monotonic(), 0
        for eid in [e for e, at in self._retries.items() if at <= now]:
            del self._retries[eid]
            # take the message back (it may have been shed meanwhile); the retry budget reads the failure count
            claimed = self.client.xclaim(self.stream, self.group, self.name, min_idle_time=0, message_ids=[eid])
            for cid, fields in claimed or []:
                if fields is None:  # deleted meanwhile (shed): nothing to answer
                    self._forget(cid)
                    continue
                done += self._handle(cid, fields)
        return done

    def _autoclaim(self) -> int:
        self._last_claim = time.monotonic()
        start, done = "0-0", 0
        while True:
            reply = self.client.xautoclaim(self.stream, self.group, self.name, min_idle_time=self.claim_idle_ms,
                                           start_id=start, count=100)
            start, entries = reply[0], reply[1]
            for eid, fields in entries:
                if fields is None:  # Redis 6.2 lists deleted entries this way
                    self._forget(eid)
                    continue
                self.stats["claimed"] += 1
                self._retries.pop(eid, None)
                log.info("worker %s: claimed %s, idle over %d ms", self.name, eid.decode(), self.claim_idle_ms)
                done += self._handle(eid, fields)
            if start in (b"0-0", "0-0"):
                return done

    def _forget(self, eid: bytes) -> None:
        """An entry deleted under a pending message (shed): acknowledge it, drop its per-entry records."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, eid)
        for key in (self.errors_key, self.started_key, self.failures_key):
            pipe.hdel(key, eid)
        pipe.execute()

    # ---- one message ------------------------------------------------------------------------------------------
    def _handle(self, eid: bytes, fields: dict) -> int:
        rid = _field(fields, "id") or f"entry:{eid.decode()}"
        submitted = _float(_field(fields, "t"))
        deadline = request_deadline(fields)
        if deadline is not None and time.time() > deadline:
            return self._expire(eid, rid, submitted, deadline)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self.started_key, eid, 1)
        pipe.hget(self.failures_key, eid)
        started, failures = pipe.execute()
        failures = int(failures or 0)
        abandoned = int(started) - 1 - failures  # attempts begun before this one that ended without an outcome
        if failures >= 1 + self.max_retries or abandoned >= 1 + self.max_retries:  # e.g. it killed every worker
            last = self.client.hget(self.errors_key, eid)
            reason = last.decode(errors="replace") if last and failures >= 1 + self.max_retries else (
                f"taken {abandoned} times and never answered: the workers that took it died while answering it")
            return self._dead_letter(eid, rid, fields, reason, int(started) - 1, submitted)
        delivered = int(started)  # this attempt's number (restarts and re-reads do not count)
        try:
            req = decode_request(fields)
            cloud_req = req.cloud_request()
        except BadFrame as e:
            return self._failed(eid, rid, fields, f"bad frame: {e}", delivered, submitted)
        except Exception as e:  # noqa: BLE001 - any frame that cannot become a request is poison
            return self._failed(eid, rid, fields, f"bad frame: {type(e).__name__}: {e}", delivered, submitted)
        try:
            r = self.backend.infer(cloud_req)
        except Exception as e:
            if _is_connection_error(e) and "redis" in type(e).__module__:
                raise
            return self._failed(eid, rid, fields, f"cloud backend raised {type(e).__name__}: {e}", delivered,
                                submitted)
        if r.status == "fallback":
            return self._failed(eid, rid, fields, f"cloud fallback: {r.reason}", delivered, submitted)
        res = StreamResult(request_id=rid, status=r.status, answer=r.answer, confidence=r.confidence,
                           reason=r.reason, worker=self.name, attempts=delivered, submitted_at=submitted,
                           answered_at=time.time(), server_ms=r.timings.total_ms,
                           detail={"model": r.model, "bytes_up": r.bytes_up, "bytes_down": r.bytes_down,
                                   "prompt_tokens": r.usage.prompt_tokens,
                                   "completion_tokens": r.usage.completion_tokens,
                                   "transfer_ms": r.timings.transfer_ms, "entry": eid.decode()})
        new = self._settle_call(eid, rid, "answered", encode_result(res), [])
        self.stats["answered" if new else "late"] += 1
        return 1

    def _failed(self, eid, rid, fields, reason: str, delivered: int, submitted: float) -> int:
        self.stats["failed"] += 1
        failures = int(self.client.hincrby(self.failures_key, eid, 1))
        if failures >= 1 + self.max_retries:
            return self._dead_letter(eid, rid, fields, reason, failures, submitted)
        log.warning("worker %s: %s (failed attempt %d of %d): %s", self.name, rid, failures, 1 + self.max_retries,
                    reason)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self.counters_key, "retried", 1)
        pipe.hset(self.errors_key, eid, reason[:2000])
        pipe.execute()
        self._retries[eid] = time.monotonic() + self.retry_backoff_s * failures
        return 0

    def _expire(self, eid, rid, submitted: float, deadline: float) -> int:
        late_s = time.time() - deadline
        log.info("worker %s: %s read %.3f s after its deadline: acknowledged as expired", self.name, rid, late_s)
        res = StreamResult(request_id=rid, status="expired", worker=self.name, submitted_at=submitted,
                           answered_at=time.time(),
                           reason=f"expired: read {late_s:.3f} s after its deadline; the cloud was not called",
                           detail={"entry": eid.decode(), "deadline": deadline})
        if self._settle_call(eid, rid, "expired", encode_result(res), []):
            self.stats["expired"] += 1
        return 1

    def _dead_letter(self, eid, rid, fields, reason: str, attempts: int, submitted: float) -> int:
        log.warning("worker %s: %s dead-lettered after %d attempts: %s", self.name, rid, attempts, reason)
        res = StreamResult(request_id=rid, status="dead", reason=reason, worker=self.name, attempts=attempts,
                           submitted_at=submitted, answered_at=time.time(), detail={"entry": eid.decode()})
        dead = [x for kv in fields.items() for x in kv]
        dead += [b"reason", reason.encode(), b"attempts", str(attempts).encode(), b"worker", self.name.encode(),
                 b"entry", eid, b"failed_at", repr(time.time()).encode()]
        if self._settle_call(eid, rid, "dead_lettered", encode_result(res), dead):
            self.stats["dead_lettered"] += 1
        return 1

    def _settle_call(self, eid, rid, kind, result_fields, dead_fields) -> bool:
        return bool(self._settle(keys=[self.stream, self.counters_key, self.results, self.dead],
                                 args=[self.group, eid, rid, kind, self.id_ttl_s, self.results_maxlen,
                                       len(result_fields), *result_fields, *dead_fields]))

    def close(self) -> None:
        self.client.close()


def _field(fields: dict, name: str) -> str | None:
    v = fields.get(name.encode(), fields.get(name))
    if v is None:
        return None
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _float(v) -> float:
    try:
        return float(v) if v is not None else 0.0
    except ValueError:
        return 0.0


def _is_missing_group(e: Exception) -> bool:
    import redis

    return isinstance(e, redis.ResponseError) and "NOGROUP" in str(e)


def _is_connection_error(e: Exception) -> bool:
    import redis

    return isinstance(e, (redis.ConnectionError, redis.TimeoutError, ConnectionRefusedError))
