"""A loopback TCP proxy that can hang: the fault on one worker's own path.

While hung it neither reads nor forwards, in either direction, and new connections
wait in its listen backlog: what a stuck sidecar or a black-holed route looks like to
the client (every call waits for its socket timeout). ``tasker_resilience.testing``
may grow a general ``FaultProxy``; this one is the little the host-sharing tests need.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

__all__ = ["HungProxy"]


class HungProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_port`` until :meth:`hang`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._running = threading.Event()
        self._running.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hang(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            self._running.wait()  # hung: connections stay in the backlog
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                if not self._running.wait(0.05):
                    continue  # hung: nothing is read, nothing forwarded
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._closed.set()
        self._running.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> HungProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
