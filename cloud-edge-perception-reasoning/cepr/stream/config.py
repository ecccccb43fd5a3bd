"""The stream settings, typed (unknown keys are errors), from a YAML file or a mapping.

YAML (every key optional; these are the defaults)::

    stream:
      redis: embedded            # or redis://HOST:PORT/DB; embedded starts a local redis-server (cepr.servers.redis_server)
      stream: cepr:requests      # hard samples, read by the cloud workers' consumer group
      group: cloud
      results: cepr:results      # answers (and shed/dead notices) for the edge
      dead: cepr:dead            # poison messages, with the reason
      maxlen: 1000               # pending backlog bound: beyond it the oldest requests are shed (and counted)
      max_retries: 3             # failed attempts retried before dead-lettering (attempts = 1 + max_retries)
      claim_idle_ms: 30000       # a message pending this long with a dead consumer is claimed by a live worker
      deadline_ms: 2000          # how long the edge waits for the cloud's answer to upgrade its own
      block_ms: 1000             # how long one XREAD/XREADGROUP waits
      results_maxlen: 10000      # results stream bound (approximate trim; results are read as they come)
      id_ttl_s: 86400            # how long a request id is remembered for idempotence

``load_stream_config(path_or_mapping)`` reads either that file, a file whose top level is those keys, or a
mapping; ``StreamConfig.queue()`` / ``.worker(backend, name)`` build the two sides from it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cepr.errors import CeprError
from cepr.servers.redis_server import resolve_url
from cepr.stream.queue import CloudQueue
from cepr.stream.worker import CloudWorker


class StreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redis: str = "embedded"
    stream: str = "cepr:requests"
    group: str = "cloud"
    results: str = "cepr:results"
    dead: str = "cepr:dead"
    maxlen: int = Field(1000, ge=1)
    max_retries: int = Field(3, ge=0)
    claim_idle_ms: int = Field(30000, ge=0)
    deadline_ms: int = Field(2000, ge=0)
    block_ms: int = Field(1000, ge=0)
    results_maxlen: int = Field(10000, ge=1)
    id_ttl_s: int = Field(86400, ge=1)

    @field_validator("redis")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != "embedded" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must be 'embedded' or a redis://HOST:PORT/DB URL, got {v!r}")
        return v

    def url(self) -> str:
        """The Redis URL (``embedded`` starts the process's local server now)."""
        return resolve_url(self.redis)

    def queue(self, url: str | None = None):
        return CloudQueue(url or self.url(), stream=self.stream, group=self.group, results=self.results,
                          dead=self.dead, maxlen=self.maxlen, max_retries=self.max_retries,
                          results_maxlen=self.results_maxlen, id_ttl_s=self.id_ttl_s)

    def worker(self, backend, consumer_name: str, url: str | None = None, **kw):
        return CloudWorker(url or self.url(), backend, consumer_name, stream=self.stream, group=self.group,
                           results=self.results, dead=self.dead, max_retries=self.max_retries,
                           claim_idle_ms=self.claim_idle_ms, block_ms=self.block_ms,
                           results_maxlen=self.results_maxlen, id_ttl_s=self.id_ttl_s, **kw)


def load_stream_config(source=None, **overrides) -> StreamConfig:
    """``source``: None (defaults), a mapping, or a YAML file (top-level ``stream:`` or the keys themselves);
    ``overrides`` (None values ignored) win over both."""
    data: dict = {}
    where = "stream settings"
    if isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise CeprError(f"stream config {str(source)!r} not found")
        where = str(p)
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise CeprError(f"{p}: expected a mapping, got {type(data).__name__}")
    elif isinstance(source, dict):
        data = dict(source)
    elif source is not None:
        raise CeprError(f"stream config must be a path or a mapping, got {type(source).__name__}")
    if set(data) == {"stream"} and isinstance(data["stream"], dict):
        data = dict(data["stream"])
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return StreamConfig(**data)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        raise CeprError(f"{where}: {msgs}") from None
