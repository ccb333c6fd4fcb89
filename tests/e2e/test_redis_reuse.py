"""``mlfleet up`` on a Redis that already answers says whether an earlier fleet's monitor state is in it."""

from __future__ import annotations

import redis

from mlfleet.runtime.redis_server import models_monitored
from services.monitor.store import MODELS_KEY


def test_models_an_earlier_monitor_recorded_are_counted(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    try:
        client.delete(MODELS_KEY)
        assert models_monitored(url) == 0
        client.sadd(MODELS_KEY, "fraud", "churn")
        assert models_monitored(url) == 2
    finally:
        client.delete(MODELS_KEY)
        client.close()
    assert models_monitored("redis://127.0.0.1:1/0") == 0, "a Redis that does not answer holds nothing we know of"
