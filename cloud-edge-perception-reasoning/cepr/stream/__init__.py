"""Cloud requests through Redis Streams: the edge queues hard samples, cloud workers answer them.

* :mod:`cepr.servers.redis_server` — ``RedisServer`` (a real local redis-server) and ``embedded()``;
* :mod:`cepr.stream.queue` — ``CloudQueue``: submit, results, the counters (the edge's side);
* :mod:`cepr.stream.worker` — ``CloudWorker``: consumer group, retries, dead letters, claiming (the cloud's side);
* :mod:`cepr.stream.codec` — what an entry holds (the scene summary's binary form travels);
* :mod:`cepr.stream.config` — ``StreamConfig`` from YAML; :mod:`cepr.stream.backend` — the cloud backend from a
  benchmark job's YAML.

Nothing here is imported by ``import cepr``; redis-py comes with the ``stream`` extra. Guide: docs/stream.md.
"""
