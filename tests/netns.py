"""A private redis-server behind a real network link this process can cut: a network
namespace joined to the host by a veth pair, and ``tc qdisc ... blackhole`` on both
ends to partition it (every packet dropped, in both directions, with no reset: what a
failed switch or a partitioned availability zone looks like).

Loopback tricks cannot stand in: a frozen server (SIGSTOP) still has its kernel ACK
and queue every byte, so the write-after-recovery problem never shows. Needs root (or
CAP_NET_ADMIN), ``ip`` and ``tc``; :func:`partitionable_server` skips the test, saying
why, where a namespace cannot be made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

__all__ = ["PartitionableServer", "partitionable_server"]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=20, check=check)


@dataclass
class PartitionableServer:
    namespace: str
    host_side: str
    server_side: str
    address: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"

    def partition(self) -> None:
        """Drop every packet both ways (the connections stay open on both ends)."""
        _run("tc", "qdisc", "add", "dev", self.host_side, "root", "blackhole")
        _run("ip", "netns", "exec", self.namespace, "tc", "qdisc", "add", "dev",
             self.server_side, "root", "blackhole")  # fmt: skip

    def heal(self) -> None:
        _run("tc", "qdisc", "del", "dev", self.host_side, "root", check=False)
        _run("ip", "netns", "exec", self.namespace, "tc", "qdisc", "del", "dev",
             self.server_side, "root", check=False)  # fmt: skip


def _why_not() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    for tool in ("ip", "tc", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    return None


def _wait_for(address: str, port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server in the namespace did not answer on {address}:{port}")


@contextlib.contextmanager
def partitionable_server() -> Iterator[PartitionableServer]:
    """A redis-server in a namespace of its own; everything removed afterwards."""
    reason = _why_not()
    if reason is not None:
        pytest.skip(f"partition tests skipped: {reason}")
    pid = os.getpid()
    namespace, host_side, server_side = f"trp{pid}", f"trh{pid}", f"trs{pid}"
    # A /30 of its own per process: two runs at once never share addresses.
    third, fourth = (pid >> 6) % 256, (pid % 64) * 4
    host_address, address = f"10.231.{third}.{fourth + 1}", f"10.231.{third}.{fourth + 2}"
    server: subprocess.Popen[bytes] | None = None
    created = _run("ip", "netns", "add", namespace, check=False)
    if created.returncode != 0:
        pytest.skip(f"partition tests skipped: cannot create a network namespace "
                    f"({created.stderr.strip()})")  # fmt: skip
    data = tempfile.TemporaryDirectory(prefix="tasker-netns-")
    try:
        _run("ip", "link", "add", host_side, "type", "veth", "peer", "name", server_side)
        _run("ip", "link", "set", server_side, "netns", namespace)
        _run("ip", "addr", "add", f"{host_address}/30", "dev", host_side)
        _run("ip", "link", "set", host_side, "up")
        inside = ("ip", "netns", "exec", namespace)
        _run(*inside, "ip", "addr", "add", f"{address}/30", "dev", server_side)
        _run(*inside, "ip", "link", "set", server_side, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        port = 6379
        server = subprocess.Popen(
            [*inside, "redis-server", "--bind", address, "--port", str(port), "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", data.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(address, port)
        yield PartitionableServer(namespace, host_side, server_side, address, port)
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        _run("tc", "qdisc", "del", "dev", host_side, "root", check=False)
        _run("ip", "link", "del", host_side, check=False)  # removes its peer too
        _run("ip", "netns", "del", namespace, check=False)
        data.cleanup()
