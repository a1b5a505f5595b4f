"""Private multi-server topologies for tests and drills: a Redis Cluster, a Sentinel group.

``LocalCluster`` starts three ``redis-server --cluster-enabled yes`` masters (no
replicas) and joins them with ``redis-cli --cluster create``; ``LocalSentinel`` starts
one primary, one replica and three ``redis-server --sentinel`` processes watching them.
Every process is a :class:`LocalServer`, so each node can be frozen, killed and
restarted on its port, and everything is stopped on ``stop()``, on leaving the
``with`` block, and at interpreter exit.

Ports are picked at random *below 55535*: a cluster node also listens on its bus
port, ``port + 10000``, which must stay a valid port and must be free too.

The cluster is configured as a cache cluster should be (see the guide, "Scaling
out"): ``cluster-require-full-coverage no``, so the healthy masters keep serving
their slots while one master is down, and a short ``cluster-node-timeout`` so the
drills see failure detection within a second.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from tasker_resilience._operations.drill.local_server import (
    LocalServer,
    ServerStartError,
    _command,
    _port_is_free,
)

__all__ = [
    "CLUSTER_NODE_TIMEOUT_MS",
    "SENTINEL_DOWN_AFTER_MS",
    "SERVICE_NAME",
    "LocalCluster",
    "LocalSentinel",
    "topology_binaries",
]

HOST = "127.0.0.1"
PORT_RANGE = (20000, 55535)
"""Where node ports are drawn from: ``port + 10000`` (the cluster bus) must be a port too."""
CLUSTER_NODE_TIMEOUT_MS = 1000
SENTINEL_DOWN_AFTER_MS = 1000
SERVICE_NAME = "tasker"
_READY_TIMEOUT_SECONDS = 20.0


def topology_binaries() -> tuple[str, str] | None:
    """``(redis-server, redis-cli)`` paths, or None when either is missing.

    Only redis-server (or valkey-server, same options) has Cluster and Sentinel modes
    that start from the command line; Dragonfly's cluster mode is driven by an
    external control plane and is not started here (see the guide).
    """
    for server, cli in (("redis-server", "redis-cli"), ("valkey-server", "valkey-cli")):
        server_path, cli_path = shutil.which(server), shutil.which(cli)
        if server_path is not None and cli_path is not None:
            return server_path, cli_path
    return None


def _binaries() -> tuple[str, str]:
    found = topology_binaries()
    if found is None:
        raise ServerStartError(
            "redis-server and redis-cli (or valkey-server and valkey-cli) are needed on PATH "
            "for a local cluster or sentinel topology (e.g. apt-get install redis-server)"
        )
    return found


def _free_ports(count: int, *, with_bus: bool) -> list[int]:
    """``count`` distinct free ports in :data:`PORT_RANGE` (and their bus ports)."""
    chosen: list[int] = []
    rng = random.SystemRandom()
    for _ in range(2000):
        port = rng.randrange(*PORT_RANGE)
        wanted = [port, port + 10000] if with_bus else [port]
        taken = {p for c in chosen for p in (c, c + 10000)}
        if taken.isdisjoint(wanted) and all(_port_is_free(p) for p in wanted):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise ServerStartError(f"found no {count} free loopback ports in {PORT_RANGE}")


def _info(port: int, section: str, timeout: float = 1.0) -> dict[str, str]:
    """``INFO <section>`` (or ``CLUSTER INFO`` for ``"cluster-info"``) as a dict."""
    if section == "cluster-info":
        request = b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n"
    else:
        request = b"*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n" % (len(section), section.encode())
    text = _command(port, request, timeout).decode("utf-8", "replace")
    return dict(
        line.strip().split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#"
    )


def _wait(check: Callable[[], bool], what: str, timeout: float = _READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError):
            pass  # not answering yet
        time.sleep(0.05)
    raise ServerStartError(f"timed out after {timeout:g} s waiting for {what}")


class _Topology:
    """Start/stop plumbing shared by both topologies."""

    servers: list[LocalServer]

    def start(self) -> _Topology:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process (thawing frozen ones first); safe to call twice."""
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:  # stop the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> _Topology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalCluster(_Topology):
    """Three cluster-enabled masters on 127.0.0.1, slots split evenly, no replicas.

    ``with LocalCluster() as cluster: cluster.url`` (``redis+cluster://127.0.0.1:<p>``).
    ``cluster.masters[i]`` is a :class:`LocalServer`: freeze, thaw, kill, restart it.
    A restarted master keeps its identity and slots (``nodes.conf`` survives in its
    data directory) and comes back empty.
    """

    def __init__(self, masters: int = 3) -> None:
        server, self._cli = _binaries()
        ports = _free_ports(masters, with_bus=True)
        options = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(CLUSTER_NODE_TIMEOUT_MS),
            # A cache cluster: the healthy masters keep serving their own slots.
            "--cluster-require-full-coverage",
            "no",
            "--cluster-allow-reads-when-down",
            "yes",
        ]
        self.masters = [LocalServer(server, port, extra_args=options) for port in ports]
        self.servers = self.masters

    @property
    def url(self) -> str:
        seed = ",".join(f"{HOST}:{m.port}" for m in self.masters[:1])
        return f"redis+cluster://{seed}"

    def node_name(self, index: int) -> str:
        """``host:port`` of master ``index``, as the cache names nodes in health and metrics."""
        return f"{HOST}:{self.masters[index].port}"

    def start(self) -> LocalCluster:
        for master in self.masters:
            master.start()
        self._create()
        self.wait_healthy()
        return self

    def _create(self) -> None:
        nodes = [f"{HOST}:{m.port}" for m in self.masters]
        result = subprocess.run(
            [self._cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=_READY_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-5:])
            raise ServerStartError(f"redis-cli --cluster create failed: {tail}")

    def wait_healthy(self, timeout: float = _READY_TIMEOUT_SECONDS) -> None:
        """Until every master is running, says ``cluster_state:ok`` and knows all 16384
        slots are served: after a start, a thaw or a restart."""

        def healthy() -> bool:
            for master in self.masters:
                if not master.is_running or master.is_frozen:
                    return False
                info = _info(master.port, "cluster-info")
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
            return True

        _wait(healthy, "the cluster to report cluster_state:ok on every master", timeout)

    def slot_owner(self, key: str) -> int:
        """Index in :attr:`masters` of the master serving ``key``."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for index in range(len(self.masters)):
            if any(start <= slot <= end for start, end in self._slot_ranges_of(index)):
                return index
        raise LookupError(f"slot {slot} of {key!r} is not served")

    def keys_on(self, index: int, count: int, prefix: str = "") -> list[str]:
        """``count`` keys (after ``prefix``) whose slots master ``index`` serves."""
        from redis.crc import key_slot

        owned = self._slot_ranges_of(index)
        keys: list[str] = []
        for n in range(1_000_000):
            key = f"k{n}"
            slot = key_slot(f"{prefix}{key}".encode())
            if any(start <= slot <= end for start, end in owned):
                keys.append(key)
                if len(keys) == count:
                    return keys
        raise LookupError(f"found fewer than {count} keys on master {index}")

    def _slot_ranges_of(self, index: int) -> list[tuple[int, int]]:
        port = self.masters[index].port
        for master in self.masters:
            if master.is_running and not master.is_frozen:
                reply = _command(master.port, b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n", 1.0)
                return [(s, e) for s, e, p in _parse_slots(reply) if p == port]
        raise ServerStartError("no master is answering")


def _parse_slots(reply: bytes) -> Iterator[tuple[int, int, int]]:
    """``(start, end, master port)`` from a raw ``CLUSTER SLOTS`` reply.

    A tiny RESP reader for this one reply shape: ``[[start, end, [ip, port, id], ...], ...]``.
    """
    lines = reply.split(b"\r\n")
    pos = 0

    def parse() -> object:
        nonlocal pos
        line = lines[pos]
        pos += 1
        kind, body = line[:1], line[1:]
        if kind == b"*":
            return [parse() for _ in range(int(body))]
        if kind == b":":
            return int(body)
        if kind == b"$":
            if int(body) < 0:
                return None
            value = lines[pos]
            pos += 1
            return value
        return body

    for entry in parse():  # type: ignore[attr-defined]  # the reply is an array of arrays
        start, end, master = entry[0], entry[1], entry[2]
        yield int(start), int(end), int(master[1])


class LocalSentinel(_Topology):
    """One primary, one replica and three sentinels on 127.0.0.1.

    ``with LocalSentinel() as group: group.url`` is
    ``redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/tasker``.
    Kill :attr:`primary` and the sentinels promote the replica after
    :data:`SENTINEL_DOWN_AFTER_MS` plus the election (a second or two).
    """

    def __init__(self) -> None:
        server, _cli = _binaries()
        primary_port, replica_port, *sentinel_ports = _free_ports(5, with_bus=False)
        self.data_nodes = [
            LocalServer(server, primary_port),
            LocalServer(server, replica_port, extra_args=["--replicaof", HOST, str(primary_port)]),
        ]
        config = (
            f"sentinel monitor {SERVICE_NAME} {HOST} {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE_NAME} {SENTINEL_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE_NAME} 10000\n"
            f"sentinel parallel-syncs {SERVICE_NAME} 1\n"
        )
        self.sentinels = [
            LocalServer(server, port, extra_args=["--sentinel"], config_text=config)
            for port in sentinel_ports
        ]
        self.servers = [*self.data_nodes, *self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}"

    def start(self) -> LocalSentinel:
        for server in self.servers:
            server.start()
        self.wait_healthy()
        return self

    def primary_port(self) -> int:
        """The port of the primary the sentinels name now."""
        for sentinel in self.sentinels:
            if sentinel.is_running and not sentinel.is_frozen:
                name = SERVICE_NAME.encode()
                request = (
                    b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n"
                    b"$%d\r\n%s\r\n" % (len(name), name)
                )
                reply = _command(sentinel.port, request, 1.0)
                return int(reply.split(b"\r\n")[-2])
        raise ServerStartError("no sentinel is answering")

    @property
    def primary(self) -> LocalServer:
        """The data node the sentinels currently name primary."""
        port = self.primary_port()
        return next(node for node in self.data_nodes if node.port == port)

    @property
    def replica(self) -> LocalServer:
        port = self.primary_port()
        return next(node for node in self.data_nodes if node.port != port)

    def wait_healthy(self, timeout: float = _READY_TIMEOUT_SECONDS) -> None:
        """Until every sentinel sees the primary, its replica and the other two
        sentinels, and the replica is in sync: a failover can happen."""

        def healthy() -> bool:
            primary = self.primary
            role = _info(primary.port, "replication")
            if role.get("role") != "master" or role.get("connected_slaves") != "1":
                return False
            replica = _info(self.replica.port, "replication")
            if replica.get("master_link_status") != "up":
                return False
            for sentinel in self.sentinels:
                info = _info(sentinel.port, "sentinel")
                master0 = info.get("master0", "")
                if "status=ok" not in master0 or "sentinels=3" not in master0:
                    return False
                if "slaves=1" not in master0:
                    return False
            return True

        _wait(healthy, "the sentinels to see the primary, its replica and each other", timeout)

    def wait_failover(self, old_primary_port: int, timeout: float = _READY_TIMEOUT_SECONDS) -> None:
        """Until the sentinels name a primary other than ``old_primary_port`` and it
        answers as a master."""

        def promoted() -> bool:
            port = self.primary_port()
            return port != old_primary_port and _info(port, "replication")["role"] == "master"

        _wait(promoted, "the sentinels to promote the replica", timeout)
