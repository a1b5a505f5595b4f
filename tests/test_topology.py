"""Topologies without servers: Sentinel URLs, pool exhaustion, per-node breakers, and how
the provider treats a node that is down (skipped, neutral for the ``cache`` breaker)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis.exceptions as rex

import tasker_resilience as tr
from tasker_resilience import CacheProvider, ConfigurationError, RedisConfig, Resilience
from tasker_resilience._cache.backends.contract import NodeUnavailable, unregister_backend
from tasker_resilience._cache.backends.nodes import NodeGuards
from tasker_resilience._cache.backends.redis_backend import RedisBackend, is_redis_failure
from tasker_resilience._cache.backends.topology import (
    SentinelTarget,
    parse_sentinel_url,
    topology_of,
)
from tasker_resilience._cache.invalidations import DELETE, DELETE_PATTERN, Step
from tasker_resilience._config.schema import BreakerConfig
from tasker_resilience.testing import ManualClock, configure_for_tests

from .backend_suite import CountingBackend, closed_port

# --- URLs ---------------------------------------------------------------------------------


def test_sentinel_url_names_every_sentinel_the_service_and_the_database() -> None:
    target = parse_sentinel_url("redis+sentinel://:pw%40x@s1:26380,s2,[::1]:5000/mymaster/3")
    assert target == SentinelTarget(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 5000)),
        service_name="mymaster",
        db=3,
        username=None,
        password="pw@x",
        ssl=False,
    )
    assert "pw" not in repr(target)
    tls = parse_sentinel_url("rediss+sentinel://user:pw@s1:1/svc")
    assert (tls.ssl, tls.username, tls.db) == (True, "user", 0)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://:topsecret@s1:26379", "service name"),
        ("redis+sentinel://:topsecret@s1:26379/", "service name"),
        ("redis+sentinel://:topsecret@/svc", "no sentinel host"),
        ("redis+sentinel://:topsecret@s1:port/svc", "valid port"),
        ("redis+sentinel://:topsecret@s1:70000/svc", "valid port"),
        ("redis+sentinel://:topsecret@s1/svc/zero", "not a number"),
        ("redis+sentinel://:topsecret@s1/svc/0/extra", "/service_name/db"),
        ("redis+sentinel://:topsecret@s1/svc?x=1", "no query string"),
    ],
)
def test_a_bad_sentinel_url_fails_configure_naming_the_shape_never_the_password(
    url: str, why: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure_for_tests({"common": {"cache": {"backend": "redis", "redis": {"url": url}}}})
    message = str(caught.value)
    assert why in message
    assert "common.cache.redis.url" in message
    assert "service_name[/db]" in message
    assert "topsecret" not in message


def test_topology_of_each_scheme() -> None:
    assert topology_of("redis://h/0") == "single"
    assert topology_of("unix:///tmp/r.sock") == "single"
    assert topology_of("REDISS+CLUSTER://h:7000") == "cluster"
    assert topology_of("redis+sentinel://h/svc") == "sentinel"


def test_a_sentinel_cache_with_no_sentinel_answering_starts_degraded() -> None:
    port = closed_port()
    res = configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "redis": {
                        "url": f"redis+sentinel://:pw@127.0.0.1:{port}/svc",
                        "connect_timeout_seconds": 0.2,
                        "socket_timeout_seconds": 0.2,
                    },
                }
            }
        }
    )
    assert res.cache.circuit_state == "open"
    assert res.cache.get("k") is None
    assert res.health()["status"] == "degraded"


def test_sentinel_backend_redacts_the_data_node_password() -> None:
    backend = RedisBackend(RedisConfig(url="redis+sentinel://:hunter2@s1:26379,s2/svc"))
    assert backend.topology == "sentinel"
    assert "hunter2" not in repr(backend)
    assert backend.redact("AUTH hunter2 refused") == "AUTH *** refused"


# --- NodeGuards ------------------------------------------------------------------------------


def _timeout() -> Exception:
    return rex.TimeoutError("Timeout reading from socket")


@pytest.fixture
def guards(clock: ManualClock) -> NodeGuards:
    config = BreakerConfig(failure_threshold=2, timeout_seconds=5, success_threshold=1)
    return NodeGuards(
        is_redis_failure, namespace_pattern="p:*", limit=2, config=config, clock=clock
    )


def _fail(guards: NodeGuards, node: str) -> None:
    call = guards.begin(node)
    guards.end(call, _timeout())


def test_a_node_opens_alone_and_refuses_without_touching_the_others(guards: NodeGuards) -> None:
    _fail(guards, "a:1")
    _fail(guards, "a:1")
    with pytest.raises(NodeUnavailable) as caught:
        guards.begin("a:1")
    assert caught.value.node == "a:1"
    healthy = guards.begin("b:2")
    guards.end(healthy, None)
    assert guards.unavailable() == ["a:1"]
    report = guards.snapshot({"a:1", "b:2", "c:3"})
    assert {name: node["state"] for name, node in report.items()} == {
        "a:1": "open",
        "b:2": "closed",
        "c:3": "closed",
    }
    assert report["a:1"]["rejected_calls"] == 1


def test_a_refused_invalidation_is_replayed_by_the_nodes_next_admitted_call(
    guards: NodeGuards, clock: ManualClock
) -> None:
    _fail(guards, "a:1")
    _fail(guards, "a:1")
    for undo in (Step(DELETE, "p:x"), Step(DELETE_PATTERN, "p:y*")):
        with pytest.raises(NodeUnavailable):
            guards.begin("a:1", undo)
    assert guards.snapshot()["a:1"]["pending_invalidations"] == 2
    clock.advance(5)
    probe = guards.begin("a:1")
    assert probe.replay is not None
    assert probe.replay.steps == (Step(DELETE, "p:x"), Step(DELETE_PATTERN, "p:y*"))
    # While the probe replays, the node's other calls are refused (it may still hold a
    # value about to be deleted).
    with pytest.raises(NodeUnavailable):
        guards.begin("a:1")
    guards.replayed(probe)
    guards.end(probe, None)
    assert guards.unavailable() == []
    assert guards.snapshot()["a:1"]["pending_invalidations"] == 0
    assert guards.begin("a:1").replay is None


def test_a_failed_replay_keeps_the_invalidations(guards: NodeGuards, clock: ManualClock) -> None:
    _fail(guards, "a:1")
    _fail(guards, "a:1")
    with pytest.raises(NodeUnavailable):
        guards.begin("a:1", Step(DELETE, "p:x"))
    clock.advance(5)
    probe = guards.begin("a:1")
    guards.end(probe, _timeout())  # the replay itself failed: back to open
    assert guards.unavailable() == ["a:1"]
    assert guards.snapshot()["a:1"]["pending_invalidations"] == 1


def test_past_the_bound_a_node_drops_its_share_of_the_namespace(
    guards: NodeGuards, clock: ManualClock
) -> None:
    _fail(guards, "a:1")
    _fail(guards, "a:1")
    for key in ("p:1", "p:2", "p:3"):
        with pytest.raises(NodeUnavailable):
            guards.begin("a:1", Step(DELETE, key))
    clock.advance(5)
    probe = guards.begin("a:1")
    assert probe.replay is not None
    assert probe.replay.steps == (Step(DELETE_PATTERN, "p:*"),)


def test_nodes_no_longer_serving_slots_are_forgotten(guards: NodeGuards) -> None:
    _fail(guards, "old:1")
    _fail(guards, "old:1")
    guards.forget_except({"new:1"})
    assert guards.unavailable() == []
    assert list(guards.snapshot({"new:1"})) == ["new:1"]


# --- the provider in front of a node-aware backend ------------------------------------------


class TwoNodeBackend(CountingBackend):
    """Keys under ``down:`` live on a node whose breaker is open."""

    def _call(self, op: str, *args: Any) -> Any:
        down = args and isinstance(args[0], str) and ":down:" in args[0]
        if down and self.failing is None:
            self.calls.append((op, *args))
            raise NodeUnavailable("10.0.0.2:7000")
        return super()._call(op, *args)


@pytest.fixture
def two_nodes() -> Iterator[TwoNodeBackend]:
    backend = TwoNodeBackend()
    tr.register_backend("two-nodes", lambda config: backend)
    yield backend
    unregister_backend("two-nodes")


@pytest.fixture
def node_res(two_nodes: TwoNodeBackend) -> Resilience:
    return configure_for_tests(
        {
            "common": {
                "cache": {"backend": "two-nodes", "key_prefix": "p"},
                "circuit_breakers": {
                    "component_configs": {"cache": {"failure_threshold": 5, "timeout_seconds": 5}}
                },
            }
        }
    )


def test_a_down_node_costs_its_keys_only_and_never_trips_the_cache_breaker(
    node_res: Resilience, two_nodes: TwoNodeBackend
) -> None:
    cache: CacheProvider = node_res.cache
    cache.set("up:1", "one")
    for _ in range(10):
        assert cache.get("down:1") is None
        cache.set("down:1", "x")
        cache.delete("down:1")
        assert cache.delete_pattern("down:*") == 0
        assert cache.get("up:1") == "one"
    assert cache.circuit_state == "closed"
    assert cache.breaker is not None
    metrics = cache.breaker.metrics()
    assert (metrics["failed_calls"], metrics["failure_count"]) == (0, 0)
    stats = cache.stats()
    assert stats["get"]["skipped_open"] == 10
    assert stats["set"]["skipped_open"] == 10
    assert stats["delete"]["skipped_open"] == 10
    assert stats["get"]["error"] == 0
    # The backend took the invalidations: nothing waits in the provider's own list.
    assert cache.pending_invalidations()["pending"] == 0


def test_async_twins_skip_a_down_node_alike(node_res: Resilience) -> None:
    cache: CacheProvider = node_res.cache

    async def run() -> tuple[Any, Any]:
        await cache.aset("up:1", 1)
        await cache.aset("down:1", 2)
        await cache.adelete("down:1")
        return await cache.aget("down:1"), await cache.aget("up:1")

    assert asyncio.run(run()) == (None, 1)
    assert cache.stats()["get"]["skipped_open"] == 1
    assert cache.pending_invalidations()["pending"] == 0


def test_a_global_replay_hands_a_down_nodes_steps_to_the_backend(
    node_res: Resilience, two_nodes: TwoNodeBackend
) -> None:
    cache: CacheProvider = node_res.cache
    two_nodes.failing = ConnectionError("refused")
    cache.delete("down:1")  # a real failure: remembered by the provider
    cache.delete("up:2")
    assert cache.pending_invalidations()["pending"] == 2
    two_nodes.failing = None
    cache.set("up:1", "one")  # replays first: down:1 is refused, up:2 applied
    assert cache.pending_invalidations()["pending"] == 0
    assert ("delete", "p:up:2") in two_nodes.calls
    assert cache.get("up:1") == "one"


def test_health_is_degraded_and_names_the_node(node_res: Resilience) -> None:
    backend: Any = node_res.cache.backend
    backend.node_report = lambda: {
        "10.0.0.2:7000": {
            "state": "open",
            "failure_count": 5,
            "total_calls": 9,
            "rejected_calls": 4,
            "opened_at": None,
            "retry_after_seconds": 3.0,
            "pending_invalidations": 1,
            "successful_calls": 0,
            "failed_calls": 5,
        },
        "10.0.0.1:7000": {
            "state": "closed",
            "failure_count": 0,
            "total_calls": 9,
            "rejected_calls": 0,
            "opened_at": None,
            "retry_after_seconds": None,
            "pending_invalidations": 0,
            "successful_calls": 9,
            "failed_calls": 0,
        },
    }
    report = node_res.health()
    assert report["status"] == "degraded"
    assert report["cache"]["unavailable_nodes"] == ["10.0.0.2:7000"]
    assert report["cache"]["nodes"]["10.0.0.2:7000"]["pending_invalidations"] == 1
    assert report["circuit_breakers"]["cache"]["state"] == "closed"


def test_a_node_failure_is_raised_as_that_node_being_unavailable(guards: NodeGuards) -> None:
    call = guards.begin("a:1", Step(DELETE, "p:x"))
    cause = _timeout()
    raised = guards.failed(call, cause)
    assert isinstance(raised, NodeUnavailable)
    assert (raised.node, raised.cause) == ("a:1", cause)
    assert "a:1" in str(raised)
    assert "TimeoutError" in str(raised)
    assert guards.snapshot()["a:1"]["pending_invalidations"] == 1, "the node keeps the delete"
    mistake = TypeError("bad key")
    assert guards.failed(guards.begin("a:1"), mistake) is mistake
    assert guards.snapshot()["a:1"]["failed_calls"] == 1


def test_a_failed_node_call_is_an_error_for_the_stats_never_for_the_cache_breaker(
    node_res: Resilience, two_nodes: TwoNodeBackend
) -> None:
    cache: CacheProvider = node_res.cache
    two_nodes.failing = NodeUnavailable("10.0.0.2:7000", TimeoutError("timed out"))
    for _ in range(10):
        assert cache.get("k") is None
        cache.set("k", 1)
    assert cache.circuit_state == "closed"
    assert cache.breaker is not None
    assert cache.breaker.metrics()["failed_calls"] == 0
    assert cache.stats()["get"]["error"] == 10
    assert cache.stats()["set"]["error"] == 10
    assert cache.pending_invalidations()["pending"] == 0


def test_the_sentinel_primary_pool_is_bounded_blocking_and_deadline_guarded() -> None:
    import redis

    from tasker_resilience._cache.backends.deadline import DeadlineSentinelConnection

    backend = RedisBackend(
        RedisConfig(url="redis+sentinel://:pw@127.0.0.1:1/svc/2", max_connections=3)
    )
    client: Any = backend.client  # built without connecting
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 3
    assert pool.connection_class is DeadlineSentinelConnection
    assert pool.connection_kwargs["db"] == 2
    assert pool.service_name == "svc"
    backend.close()
