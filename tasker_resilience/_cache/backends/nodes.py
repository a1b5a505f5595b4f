"""Per-node circuit breakers for a cache spread over several servers (Redis Cluster).

Why per node: the ``cache`` breaker counts *consecutive* failures. With one master of
three frozen, two calls in three succeed on the healthy masters and reset the streak,
so the global breaker never opens and every call to the frozen master waits for its
socket timeout, for the whole outage. A failure-rate window (resilience4j's design)
would open the global breaker instead, and then the two healthy masters would be
refused as well: a third of the cache lost becomes all of it.

So each master gets its own :class:`Breaker`, with the ``cache`` breaker's
thresholds, in front of the same ``cache`` breaker:

- a key's call asks its master's breaker first; while that breaker is open the call
  raises :class:`NodeUnavailable` at once (no network) and the provider answers it as
  skipped (a miss, a no-op), counted as ``skipped_open`` and *neutral* for the global
  breaker: it neither trips nor closes it;
- a node's failures count against its own breaker only; the ``cache`` breaker keeps
  counting what no single node explains (the slot table cannot be loaded, no node is
  reachable), and it is opened when every master's breaker is open, so a whole-cluster
  outage reads ``open`` where users look (``cache.circuit_state``, health);
- invalidations (``delete``, ``delete_pattern``, a write-through ``set``) refused
  for an open node are remembered per node, bounded, and replayed on that node by the
  first call it admits again, before that call runs: a node that comes back never
  serves a value invalidated while it was away. Past the bound, the node's share of
  the ``key_prefix`` namespace is dropped instead.

Node breakers are private to the backend, not entries of the registry: the ``cache``
breaker stays the one users configure and see. Their state is reported under the
cache in ``health()`` (a node that is not ``closed`` makes the service ``degraded``,
by name) and in the metrics (``tasker_resilience_cache_node_state{node=...}``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final, NamedTuple, NoReturn

from tasker_resilience._breakers.breaker import CLOSED, Breaker, Clock, Ticket
from tasker_resilience._breakers.policy import FailurePolicy
from tasker_resilience._cache.backends.contract import NodeUnavailable
from tasker_resilience._cache.invalidations import PendingInvalidations, ReplayPlan, Step
from tasker_resilience._config.schema import BreakerConfig
from tasker_resilience._forks import new_lock_after_fork

__all__ = ["NODE_BREAKER_PREFIX", "NodeCall", "NodeGuards"]

NODE_BREAKER_PREFIX: Final = "cache@"
"""Node breakers are named ``cache@host:port`` in logs."""

_LOGGER = logging.getLogger("tasker_resilience.cache")


class NodeCall(NamedTuple):
    """One call admitted by a node's breaker; ``replay`` is what to apply first,
    ``undo`` the invalidation the call stands for (kept by the node if it fails)."""

    node: str
    breaker: Breaker
    generation: Ticket
    replay: ReplayPlan | None
    undo: Step | None


class NodeGuards:
    """The breakers and missed invalidations of each node. Thread-safe.

    ``policy`` says which exceptions count as node failures (the backend's own).
    ``config`` and ``enabled`` come from the ``cache`` breaker (see :meth:`configure`).
    """

    def __init__(
        self,
        policy: FailurePolicy,
        *,
        namespace_pattern: str,
        limit: int = 1000,
        config: BreakerConfig | None = None,
        enabled: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        self._policy = policy
        self._namespace_pattern = namespace_pattern
        self._limit = limit
        self._config = config or BreakerConfig()
        self._enabled = enabled
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._pending: dict[str, PendingInvalidations] = {}
        self._lock = threading.Lock()
        new_lock_after_fork(self)

    def configure(self, config: BreakerConfig, *, enabled: bool) -> None:
        """Take the ``cache`` breaker's thresholds (and on/off switch) for every node."""
        with self._lock:
            self._config, self._enabled = config, enabled
            self._breakers.clear()

    def breaker(self, node: str) -> Breaker:
        """The breaker of ``node`` (``host:port``), made on first use."""
        breaker = self._breakers.get(node)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(node)
                if breaker is None:
                    breaker = self._breakers[node] = Breaker(
                        NODE_BREAKER_PREFIX + node,
                        self._config,
                        enabled=self._enabled,
                        clock=self._clock,
                        failure_policy=self._policy,
                    )
        return breaker

    def _pending_of(self, node: str) -> PendingInvalidations:
        pending = self._pending.get(node)
        if pending is None:
            with self._lock:
                pending = self._pending.setdefault(
                    node, PendingInvalidations(self._limit, self._namespace_pattern)
                )
        return pending

    # --- one call: begin, (replay), end; shared by the sync and async paths -----------

    def begin(self, node: str, undo: Step | None = None) -> NodeCall:
        """Admit one call to ``node`` or raise :class:`NodeUnavailable`.

        ``undo`` is the invalidation the call stands for; a refused call leaves it with
        the node, to be replayed there. When the node has missed invalidations, the
        admitted call carries them in ``replay``; while another caller is replaying
        them, this call is refused too (the node may still hold a value about to be
        deleted).
        """
        breaker = self.breaker(node)
        generation = breaker._acquire()
        if generation is None:
            self._refused(node, undo)
        pending = self._pending.get(node)
        plan = None
        if pending is not None and pending.active:
            if not pending.claim():
                unavailable = NodeUnavailable(node)
                breaker._release(generation, unavailable, self._policy)  # neutral
                self._refused(node, undo)
            plan = pending.take_all()
        return NodeCall(node, breaker, generation, plan, undo)

    def _refused(self, node: str, undo: Step | None) -> NoReturn:
        if undo is not None:
            self._pending_of(node).add(*undo)
        raise NodeUnavailable(node)

    def replayed(self, call: NodeCall) -> None:
        """Every step of ``call.replay`` reached the node."""
        plan = call.replay
        if plan is None:
            return
        self._pending_of(call.node).settle(plan)
        if plan.overflowed:
            _LOGGER.warning(
                "cache node %s missed more invalidations than remembered; dropped its "
                "share of the namespace",
                call.node,
            )
        else:
            _LOGGER.info(
                "cache node %s: replayed %d missed invalidation(s)", call.node, len(plan.steps)
            )

    def end(self, call: NodeCall, exc: BaseException | None) -> None:
        """Record the outcome of an admitted call on its node's breaker."""
        if call.replay is not None:
            pending = self._pending_of(call.node)
            pending.give_back(call.replay)  # nothing, when it was replayed
            pending.release()
        call.breaker._release(call.generation, exc, self._policy)

    def failed(self, call: NodeCall, exc: BaseException) -> BaseException:
        """Record a call that raised; what to raise instead.

        A node failure becomes :class:`NodeUnavailable` with the redis-py error as its
        ``cause``: it counted against the node's breaker, the call's invalidation stays
        with the node, and the ``cache`` breaker must not count it again (two shards'
        worth of successes would not reset it, but a run of calls to one hot key on a
        frozen master would open it, refusing the healthy masters too). Anything else
        (a caller's mistake, cancellation, local pool exhaustion) is returned as is.
        """
        self.end(call, exc)
        if not self._policy(exc):
            return exc
        if call.undo is not None:
            self._pending_of(call.node).add(*call.undo)
        return NodeUnavailable(call.node, exc)

    def none_closed(self, nodes: set[str]) -> bool:
        """True when no one of ``nodes`` has a closed breaker (a whole-cluster outage:
        each open, or half-open and probing)."""
        return bool(nodes) and all(self.breaker(node).state != CLOSED for node in nodes)

    # --- reading ----------------------------------------------------------------------

    def forget_except(self, nodes: set[str]) -> None:
        """Drop the breakers of nodes no longer serving slots (after a resharding or a
        cluster failover), so they do not report a stale outage forever."""
        with self._lock:
            for node in [n for n in self._breakers if n not in nodes]:
                del self._breakers[node]
            for node in [n for n in self._pending if n not in nodes]:
                if not self._pending[node].active:
                    del self._pending[node]

    def snapshot(self, nodes: set[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per node: breaker state and counters, plus invalidations waiting for it.

        ``nodes`` (the masters serving slots now) are listed even before their first
        call; without it, every node seen so far.
        """
        names = sorted(set(self._breakers) | (nodes or set()))
        report: dict[str, dict[str, Any]] = {}
        for node in names:
            metrics = self.breaker(node).metrics()
            pending = self._pending.get(node)
            metrics["pending_invalidations"] = 0 if pending is None else len(pending)
            metrics["pending_overflowed"] = False if pending is None else pending.overflowed
            report[node] = metrics
        return report

    def unavailable(self) -> list[str]:
        """Nodes whose breaker is not closed, sorted."""
        return sorted(node for node, b in list(self._breakers.items()) if b.state != CLOSED)

    def __len__(self) -> int:
        return len(self._breakers)
