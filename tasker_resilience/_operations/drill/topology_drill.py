"""``tasker-resilience drill --topology cluster|sentinel``: the outage story on a local
Redis Cluster or Sentinel group, so an operator sees what a shard loss or a failover
costs the callers.

- ``cluster``: three masters (``LocalCluster``). One master is frozen (SIGSTOP), then
  thawed; another is killed (SIGKILL), then restarted on its port. For each outage the
  report gives the share of calls that waited for a timeout after the first 2 s (each
  master has its own breaker, so this should be a fraction of a percent), the hits on
  the healthy masters, what ``health()`` said, and how long the master took to be used
  again once back.
- ``sentinel``: a primary, a replica and three sentinels (``LocalSentinel``). The
  primary is killed; the report gives how long the callers saw misses before the cache
  resumed on the promoted replica, and checks that no call raised and that a delete
  made during the failover reached the new primary.

Every process is private, on free loopback ports, and stopped when the drill ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from tasker_resilience._operations.drill.report import DrillReport, PhaseResult
from tasker_resilience._operations.drill.runner import (
    DrillOptions,
    Progress,
    _Drill,
    _TransitionListener,
    run_on_target,
)
from tasker_resilience._operations.drill.targets import DrillError
from tasker_resilience._operations.drill.topology import LocalCluster, LocalSentinel

if TYPE_CHECKING:
    from tasker_resilience._resilience import Resilience

__all__ = ["TOPOLOGIES", "run_topology_drill"]

TOPOLOGIES: Final = ("cluster", "sentinel")
SETTLE_SECONDS: Final = 2.0
"""The first seconds of a shard outage, while the node's breaker is still learning."""
STALE_KEY: Final = "drill:stale-check"


class _TopologyTarget:
    """The drill's target: a local topology, started here, stopped in :meth:`close`."""

    def __init__(self, kind: str) -> None:
        if kind not in TOPOLOGIES:
            raise DrillError(f"--topology must be one of {', '.join(TOPOLOGIES)}, not {kind!r}")
        self.mode = f"local-{kind}"
        self.topology: LocalCluster | LocalSentinel
        try:
            self.topology = LocalCluster() if kind == "cluster" else LocalSentinel()
            self.topology.start()
        except Exception as exc:
            self.close()
            raise DrillError(
                f"could not start a local {kind}: {type(exc).__name__}: {exc}"
            ) from None
        if isinstance(self.topology, LocalCluster):
            ports = ", ".join(str(m.port) for m in self.topology.masters)
            self.description = (
                f"a private 3-master Redis Cluster on 127.0.0.1 ports {ports} (no replicas, "
                "cluster-require-full-coverage no)"
            )
        else:
            group = self.topology
            self.description = (
                f"a private Sentinel group on 127.0.0.1: primary {group.data_nodes[0].port}, "
                f"replica {group.data_nodes[1].port}, sentinels "
                f"{', '.join(str(s.port) for s in group.sentinels)}"
            )

    def cache_overrides(self) -> dict[str, Any]:
        return {"redis": {"url": self.topology.url}}

    def freeze(self) -> None:
        raise AssertionError("topology drills freeze single nodes themselves")

    thaw = freeze

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        raise AssertionError("topology drills make no raw comparison calls")

    def close(self) -> None:
        topology = getattr(self, "topology", None)
        if topology is not None:
            topology.stop()


def _share(phase: PhaseResult) -> str:
    if not phase.operations:
        return "no calls"
    return (
        f"{phase.errors} of {phase.operations} calls ({phase.errors / phase.operations:.2%}) "
        f"still reached the lost master and failed (a timeout if frozen, a refused "
        f"connection if killed), {phase.skipped} were answered at once by its breaker"
    )


def _health_line(res: Resilience) -> str:
    report = res.health()
    unavailable = report["cache"].get("unavailable_nodes", [])
    return f"health said {report['status']!r}, unavailable_nodes={unavailable}"


def _node_state(res: Resilience, node: str) -> str:
    state: str = res.cache.nodes().get(node, {}).get("state", "closed")
    return state


def _shard_outage(
    drill: _Drill,
    report: DrillReport,
    *,
    node: str,
    what: str,
    start: Callable[[], None],
    end: Callable[[], None],
) -> bool:
    """One master lost for ``SETTLE_SECONDS + outage`` seconds under the load, then back."""
    options, res, progress = drill.options, drill.res, drill.progress
    progress.event(f"{what}: master {node} lost; the other two keep serving")
    start()
    try:
        settle = drill.phase(what, lambda t: t >= SETTLE_SECONDS)
        lost = drill.phase(f"{what}+2s", lambda t: t >= options.outage)
        health = _health_line(res)
    finally:
        end()
    for phase in (settle, lost):
        phase.breaker_state = _node_state(res, node)
        report.phases.append(phase)
    progress.event(f"{what}: master {node} back; its breaker probes it")
    back = drill.phase(
        f"{what}:back",
        lambda t: _node_state(res, node) == "closed",
        limit=options.phase_limit,
    )
    back.breaker_state = _node_state(res, node)
    report.phases.append(back)
    report.summary.extend(
        [
            f"{what} master {node}: after the first {SETTLE_SECONDS:g} s, {_share(lost)}; "
            f"{lost.hits} hits on the other masters; {health}",
            f"  used again {back.seconds:.2f} s after it came back (its breaker probed it; "
            f"no restart of the client)" + ("" if back.reached else " -- NOT within the limit"),
        ]
    )
    return back.reached


def _watch_node(drill: _Drill, node: str, transitions: list[dict[str, Any]]) -> None:
    """Record and show the transitions of one master's own breaker."""
    backend: Any = drill.res.cache.backend

    def record(old: str, new: str) -> None:
        at = round(time.perf_counter() - drill.started, 3)
        transitions.append({"at_seconds": at, "breaker": node, "from": old, "to": new})
        drill.progress.event(f"breaker of master {node}: {old} -> {new}")

    backend.nodes.breaker(node).add_listener(_TransitionListener(record))


def _run_cluster(drill: _Drill, report: DrillReport, cluster: LocalCluster) -> None:
    options, cache = drill.options, drill.res.cache
    frozen, killed = 1, 2
    stale = cluster.keys_on(frozen, 1, prefix="tasker-drill:")[0]
    cache.set(stale, "before the outage", ttl=300)
    node_transitions: list[dict[str, Any]] = []
    for index in (frozen, killed):
        _watch_node(drill, cluster.node_name(index), node_transitions)
    drill.progress.event(f"warm-up: {options.rate:g} ops/s for {options.warmup:g}s")
    report.phases.append(drill.phase("warm-up", lambda t: t >= options.warmup))

    master = cluster.masters[frozen]

    def freeze() -> None:
        master.freeze()
        cache.delete(stale)  # skipped for that master: kept by its guard, replayed later

    thawed = _shard_outage(
        drill, report, node=cluster.node_name(frozen), what="freeze", start=freeze, end=master.thaw
    )
    victim = cluster.masters[killed]

    def restart() -> None:
        victim.restart()
        cluster.wait_healthy()

    restarted = _shard_outage(
        drill, report, node=cluster.node_name(killed), what="kill", start=victim.kill, end=restart
    )
    # Each lost master's own breaker opened, and each closed again once it was back.
    lost = {cluster.node_name(frozen), cluster.node_name(killed)}
    report.opened = lost <= {t["breaker"] for t in node_transitions if t["to"] == "open"}
    report.closed_again = thawed and restarted
    report.notes.append("the breaker column of a lost master's phases is that master's own")
    drill.transitions.extend(node_transitions)
    drill.progress.event(f"closed: {options.cooldown:g}s of normal load")
    report.phases.append(drill.phase("closed", lambda t: t >= options.cooldown))
    value = cache.get(stale)
    report.stale_read_check = "passed" if value is None else "failed"
    report.summary.append(
        "stale-read check (key deleted while its master was frozen): " + report.stale_read_check
    )


def _run_sentinel(drill: _Drill, report: DrillReport, group: LocalSentinel) -> None:
    options, cache, breaker = drill.options, drill.res.cache, drill.breaker
    cache.set(STALE_KEY, "before the failover", ttl=300)
    drill.progress.event(f"warm-up: {options.rate:g} ops/s for {options.warmup:g}s")
    report.phases.append(drill.phase("warm-up", lambda t: t >= options.warmup))
    old = group.primary_port()
    drill.progress.event(f"failover: primary on port {old} killed; the sentinels promote")
    group.primary.kill()
    cache.delete(STALE_KEY)  # no primary to take it: remembered, replayed on the new one

    def resumed(_: float) -> bool:
        return breaker.state == "closed" and group.primary_port() != old

    failover = drill.phase("failover", resumed, limit=options.phase_limit + 20)
    report.phases.append(failover)
    report.opened = any(t["to"] == "open" for t in drill.transitions)
    new = group.primary_port() if failover.reached else None
    drill.progress.event(f"closed: {options.cooldown:g}s of normal load on port {new}")
    report.phases.append(drill.phase("closed", lambda t: t >= options.cooldown))
    report.closed_again = failover.reached and breaker.state == "closed"
    value = cache.get(STALE_KEY)
    report.stale_read_check = "passed" if value is None else "failed"
    report.summary.extend(
        [
            f"failover: the cache resumed on the new primary (port {new}) {failover.seconds:.2f} s "
            f"after the primary was killed" + ("" if failover.reached else " -- NOT in time"),
            f"  meanwhile {failover.operations} calls: {failover.skipped} answered at once "
            f"(circuit open), {failover.errors} failed fast or waited, none raised",
            f"stale-read check (key deleted during the failover, replayed on the new primary): "
            f"{report.stale_read_check}",
        ]
    )


def run_topology_drill(
    options: DrillOptions, topology: str, progress: Progress | None = None
) -> DrillReport:
    """Run the outage story on a local ``topology`` (``cluster`` or ``sentinel``)."""
    target = _TopologyTarget(topology)
    local = target.topology

    def stage(drill: _Drill, report: DrillReport) -> None:
        if isinstance(local, LocalCluster):
            _run_cluster(drill, report, local)
        else:
            _run_sentinel(drill, report, local)
        for entry in drill.transitions:
            entry.setdefault("breaker", "cache")
        drill.transitions.sort(key=lambda t: t["at_seconds"])

    return run_on_target(options, target, progress or Progress(enabled=False), stage)
